//! `template.yaml` and the code agree: cache policy TTLs and parameters, the tag header, the
//! binaries SAM builds, and the environment variables the functions are given.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cache_policy::Policy;
use clap::{CommandFactory, Parser};
use serde_yaml::Value;

use crate::helpers::{assert_generated, splice};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Loads the template, dropping CloudFormation's short-form tags (`!Ref x` → `x`) so paths can be
/// followed; tagged values keep their content.
fn template() -> Value {
    fn untag(v: Value) -> Value {
        match v {
            Value::Tagged(t) => untag(t.value),
            Value::Mapping(m) => Value::Mapping(m.into_iter().map(|(k, v)| (k, untag(v))).collect()),
            Value::Sequence(s) => Value::Sequence(s.into_iter().map(untag).collect()),
            other => other,
        }
    }
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    untag(serde_yaml::from_str(&text).expect("template.yaml is YAML"))
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| v.get(*key).unwrap_or_else(|| panic!("template.yaml lacks {}", path.join("."))))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_sequence().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn env_names(command: clap::Command) -> BTreeSet<String> {
    command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect()
}

/// CloudFront's path pattern match: `*` any run of characters, `?` one character.
fn glob(pattern: &str, path: &str) -> bool {
    match (pattern.chars().next(), path.chars().next()) {
        (None, None) => true,
        (Some('*'), _) => {
            glob(&pattern[1..], path)
                || (!path.is_empty() && glob(pattern, &path[path.chars().next().unwrap().len_utf8()..]))
        }
        (Some('?'), Some(c)) => glob(&pattern[1..], &path[c.len_utf8()..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[p.len_utf8()..], &path[c.len_utf8()..]),
        _ => false,
    }
}

#[test]
fn every_route_is_keyed_on_exactly_its_declared_query_parameters() {
    let t = template();
    let policy = Policy::embedded().unwrap();
    let dist = at(&t, &["Resources", "Distribution", "Properties", "DistributionConfig"]);
    let behaviors = dist.get("CacheBehaviors").and_then(Value::as_sequence).cloned().unwrap_or_default();
    let default_policy = at(dist, &["DefaultCacheBehavior", "CachePolicyId"]).as_str().unwrap().to_owned();
    for route in policy.routes() {
        // A concrete path of the route, as a viewer would ask for it.
        let path = route.path.render(|_| Some("x")).unwrap();
        let behavior = behaviors
            .iter()
            .find(|b| glob(b["PathPattern"].as_str().unwrap(), &path))
            .unwrap_or_else(|| at(dist, &["DefaultCacheBehavior"]));
        let cache_policy = behavior["CachePolicyId"].as_str().map_or(default_policy.clone(), str::to_owned);
        // The origin receives what the cache key holds and the warmer's mark, nothing more: a
        // viewer query string (or header) the key does not separate could make the API store under
        // one key an answer made for other parameters.
        let origin_policy = behavior["OriginRequestPolicyId"].as_str();
        assert_eq!(origin_policy, Some("ApiOriginRequestPolicy"), "{} ({path})", route.name);
        let forwarded = at(&t, &["Resources", "ApiOriginRequestPolicy", "Properties", "OriginRequestPolicyConfig"]);
        assert_eq!(at(forwarded, &["QueryStringsConfig", "QueryStringBehavior"]).as_str(), Some("none"));
        assert_eq!(at(forwarded, &["CookiesConfig", "CookieBehavior"]).as_str(), Some("none"));
        assert_eq!(at(forwarded, &["HeadersConfig", "HeaderBehavior"]).as_str(), Some("whitelist"));
        assert_eq!(
            strings(at(forwarded, &["HeadersConfig", "Headers"])),
            BTreeSet::from([cache_policy::WARM_HEADER.to_owned()]),
            "only the warmer's mark"
        );
        let config = at(&t, &["Resources", cache_policy.as_str(), "Properties", "CachePolicyConfig"]);
        let max_ttl = at(config, &["MaxTTL"]).as_u64().unwrap();
        assert!(
            max_ttl >= route.edge_ttl.as_secs(),
            "{}: MaxTTL {max_ttl} < edge TTL {:?}",
            route.name,
            route.edge_ttl
        );
        assert_eq!(at(config, &["MinTTL"]).as_u64(), Some(0));
        assert_eq!(at(config, &["DefaultTTL"]).as_u64(), Some(0), "uncacheable unless the API says so");
        let params = at(config, &["ParametersInCacheKeyAndForwardedToOrigin"]);
        assert_eq!(at(params, &["EnableAcceptEncodingGzip"]).as_bool(), Some(true));
        assert_eq!(at(params, &["EnableAcceptEncodingBrotli"]).as_bool(), Some(true));
        let query = at(params, &["QueryStringsConfig"]);
        let declared: BTreeSet<String> = route.query.iter().map(|q| q.name.clone()).collect();
        if declared.is_empty() {
            assert_eq!(at(query, &["QueryStringBehavior"]).as_str(), Some("none"), "{} ({path})", route.name);
        } else {
            assert_eq!(at(query, &["QueryStringBehavior"]).as_str(), Some("whitelist"), "{}", route.name);
            assert_eq!(strings(at(query, &["QueryStrings"])), declared, "{}: key = declared parameters", route.name);
        }
    }
    assert!(glob("/v1/sightings/*", "/v1/sightings/latest") && !glob("/v1/sightings/*", "/v1/lines"));
}

#[test]
fn tag_header_matches_the_api() {
    let t = template();
    let api_default = api::config::Cli::command()
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == "CACHE_TAG_HEADER"))
        .and_then(|a| a.get_default_values().first().map(|v| v.to_string_lossy().into_owned()))
        .unwrap();
    let dist = at(&t, &["Resources", "Distribution", "Properties", "DistributionConfig"]);
    assert_eq!(at(dist, &["CacheTagConfig", "HeaderName"]).as_str(), Some(api_default.as_str()));
    let env = at(&t, &["Resources", "ApiFunction", "Properties", "Environment", "Variables"]);
    assert_eq!(at(env, &["CACHE_TAG_HEADER"]).as_str(), Some(api_default.as_str()));
    let removed = at(
        &t,
        &[
            "Resources",
            "ApiResponseHeadersPolicy",
            "Properties",
            "ResponseHeadersPolicyConfig",
            "RemoveHeadersConfig",
            "Items",
        ],
    );
    assert!(removed.as_sequence().unwrap().iter().any(|i| i["Header"].as_str() == Some(api_default.as_str())));
    assert_eq!(at(dist, &["DefaultCacheBehavior", "ViewerProtocolPolicy"]).as_str(), Some("https-only"));
    assert_eq!(at(dist, &["HttpVersion"]).as_str(), Some("http2and3"));
}

#[test]
fn functions_build_binaries_of_the_workspace_and_set_only_variables_they_read() {
    let t = template();
    let globals = at(&t, &["Globals", "Function"]);
    assert_eq!(at(globals, &["Runtime"]).as_str(), Some("provided.al2023"));
    assert_eq!(strings(at(globals, &["Architectures"])), BTreeSet::from(["arm64".to_owned()]));
    assert_eq!(at(globals, &["Handler"]).as_str(), Some("bootstrap"));

    let metadata = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let bins: BTreeSet<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();

    let read_by = |binary: &str| -> BTreeSet<String> {
        let mut names = match binary {
            "api" => env_names(api::config::Cli::command()),
            "warmer" => env_names(warmer::cli::WarmerCli::command()),
            other => panic!("no known configuration for binary {other}"),
        };
        names.insert("RUST_LOG".to_owned()); // tracing's filter
        names
    };
    for (function, binary) in [("ApiFunction", "api"), ("WarmerFunction", "warmer")] {
        let resource = at(&t, &["Resources", function]);
        assert_eq!(at(resource, &["Metadata", "BuildMethod"]).as_str(), Some("rust-cargolambda"));
        let built = at(resource, &["Metadata", "BuildProperties", "Binary"]).as_str().unwrap();
        assert_eq!(built, binary);
        assert!(bins.contains(built), "{function} builds `{built}`, which the workspace does not have: {bins:?}");
        let vars = at(resource, &["Properties", "Environment", "Variables"]).as_mapping().unwrap();
        let known = read_by(binary);
        for name in vars.keys().map(|k| k.as_str().unwrap()) {
            assert!(known.contains(name), "{function} sets {name}, which `{binary}` does not read");
        }
    }
}

#[test]
fn only_cloudfront_reaches_the_function_url() {
    let t = template();
    let api = at(&t, &["Resources", "ApiFunction", "Properties", "FunctionUrlConfig"]);
    assert_eq!(at(api, &["AuthType"]).as_str(), Some("AWS_IAM"));
    let oac = at(&t, &["Resources", "ApiOriginAccessControl", "Properties", "OriginAccessControlConfig"]);
    assert_eq!(at(oac, &["OriginAccessControlOriginType"]).as_str(), Some("lambda"));
    for permission in ["ApiUrlPermissionForCloudFront", "ApiInvokePermissionForCloudFront"] {
        let p = at(&t, &["Resources", permission, "Properties"]);
        assert_eq!(at(p, &["Principal"]).as_str(), Some("cloudfront.amazonaws.com"));
        assert!(at(p, &["SourceArn"]).as_str().unwrap().contains(":distribution/${Distribution}"));
    }
    let statement =
        &at(&t, &["Resources", "WarmerFunction", "Properties", "Policies"]).as_sequence().unwrap()[0]["Statement"][0];
    assert_eq!(
        strings(&statement["Action"]),
        ["cloudfront:CreateInvalidation", "cloudfront:GetInvalidation", "cloudfront:ListInvalidations"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
    assert!(statement["Resource"].as_str().unwrap().ends_with(":distribution/${Distribution}"));
}

/// CORS is the edge's job: the Function URL has none, the response headers policy answers for
/// `CorsAllowOrigin` on every behaviour (preflights included), and no cache key holds `Origin`.
#[test]
fn cors_is_answered_at_the_edge_and_never_keys_the_cache() {
    let t = template();
    let url = at(&t, &["Resources", "ApiFunction", "Properties", "FunctionUrlConfig"]);
    assert!(url.get("Cors").is_none(), "the Function URL must not answer CORS itself");
    let cors =
        at(&t, &["Resources", "ApiResponseHeadersPolicy", "Properties", "ResponseHeadersPolicyConfig", "CorsConfig"]);
    assert_eq!(
        strings(at(cors, &["AccessControlAllowOrigins", "Items"])),
        BTreeSet::from(["CorsAllowOrigin".to_owned()])
    );
    assert!(strings(at(cors, &["AccessControlAllowMethods", "Items"])).is_superset(&BTreeSet::from([
        "GET".to_owned(),
        "HEAD".to_owned(),
        "OPTIONS".to_owned()
    ])));
    assert_eq!(at(cors, &["OriginOverride"]).as_bool(), Some(true));
    assert!(strings(at(cors, &["AccessControlAllowHeaders", "Items"])).contains("if-none-match"));
    assert!(strings(at(cors, &["AccessControlExposeHeaders", "Items"])).contains("etag"));

    let config = at(&t, &["Resources", "Distribution", "Properties", "DistributionConfig"]);
    let mut behaviours = vec![at(config, &["DefaultCacheBehavior"]).clone()];
    behaviours.extend(at(config, &["CacheBehaviors"]).as_sequence().unwrap().iter().cloned());
    for b in &behaviours {
        assert_eq!(at(b, &["ResponseHeadersPolicyId"]).as_str(), Some("ApiResponseHeadersPolicy"));
        // Preflights reach the origin (which answers 204) and are cached like any answer.
        assert!(strings(at(b, &["AllowedMethods"])).contains("OPTIONS"));
        assert!(strings(at(b, &["CachedMethods"])).contains("OPTIONS"));
    }
    for (name, resource) in at(&t, &["Resources"]).as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::CloudFront::CachePolicy") {
            continue;
        }
        let headers = at(
            resource,
            &["Properties", "CachePolicyConfig", "ParametersInCacheKeyAndForwardedToOrigin", "HeadersConfig"],
        );
        let keyed = headers.get("Headers").map(|h| strings(at(h, &["Items"]))).unwrap_or_default();
        assert!(
            headers["HeaderBehavior"].as_str() == Some("none")
                || !keyed.iter().any(|h| h.eq_ignore_ascii_case("origin")),
            "{name:?} keys on Origin"
        );
    }
}

/// The API's instances are capped, and so are its database connections: the default reserved
/// concurrency times the connections each Lambda instance opens, plus the warmer's (its runs
/// capped the same way, times its pool), stays within
/// half of a db.t4g.micro's max_connections (about 80), the smallest RDS a deployment would use.
#[test]
fn api_concurrency_is_capped_below_the_database_connection_limit() {
    let t = template();
    let api = at(&t, &["Resources", "ApiFunction", "Properties"]);
    assert_eq!(at(api, &["ReservedConcurrentExecutions"]).as_str(), Some("ApiReservedConcurrency"));
    let param = at(&t, &["Parameters", "ApiReservedConcurrency"]);
    let instances = at(param, &["Default"]).as_u64().unwrap();
    assert!(at(param, &["MinValue"]).as_u64().unwrap() >= 1, "0 would stop the API altogether");
    let lambda = api::config::Cli::try_parse_from(["api", "--lambda-runtime-api", "127.0.0.1:9001"]).unwrap().config;
    let per_instance = u64::from(lambda.max_connections());
    // The warmer's: scheduled runs overlap (a slow tick, an event that starts two), so its
    // reserved concurrency caps them, each with its pool.
    let warmer = at(&t, &["Resources", "WarmerFunction", "Properties"]);
    let runs = at(warmer, &["ReservedConcurrentExecutions"]).as_u64().expect("the warmer's runs are capped");
    assert!(runs >= 2, "a new run must start while a slow tick runs, to find its lease held or take it over");
    let warmer = runs * u64::from(warmer::cli::MAX_CONNECTIONS);
    assert!(instances * per_instance + warmer <= 40, "{instances} × {per_instance} + {warmer} connections");
}

/// The warmer refills the edge only after every API instance has evicted a change: the stack sets
/// the API's CHANGE_MAX_LAG and the warmer's WARMER_SETTLE from one parameter, and the binaries'
/// own defaults keep WARMER_SETTLE ≥ CHANGE_MAX_LAG for a deployment that sets neither.
#[test]
fn the_warmer_settles_at_least_as_long_as_an_instance_may_lag() {
    let t = template();
    let api = at(&t, &["Resources", "ApiFunction", "Properties", "Environment", "Variables"]);
    let warmer = at(&t, &["Resources", "WarmerFunction", "Properties", "Environment", "Variables"]);
    assert_eq!(at(api, &["CHANGE_MAX_LAG"]).as_str(), Some("FreshnessBound"));
    assert_eq!(at(warmer, &["WARMER_SETTLE"]).as_str(), Some("FreshnessBound"));
    let bound = at(&t, &["Parameters", "FreshnessBound", "Default"]).as_str().unwrap().to_owned();
    let bound = cache_policy::parse_duration(&bound).unwrap();
    let lag = api::config::Cli::try_parse_from(["api"]).unwrap().config.change_max_lag;
    let settle = warmer::cli::WarmerCli::try_parse_from(["warmer"]).unwrap().outbox.settle;
    assert!(settle >= lag, "defaults: WARMER_SETTLE {settle:?} < CHANGE_MAX_LAG {lag:?}");
    assert_eq!(bound, lag, "the stack's bound is the API's default");
    // The API refuses a bound it cannot keep with its poll settings.
    let too_short = api::config::Cli::try_parse_from(["api", "--change-max-lag", "1s"]).unwrap().config;
    assert!(too_short.validate().is_err());
}

/// Each function reads the database secret itself, and may read only that secret: one
/// `secretsmanager:GetSecretValue` on `DatabaseSecretArn`, present only when a secret is used.
#[test]
fn functions_read_the_database_secret_with_least_privilege() {
    let t = template();
    for function in ["ApiFunction", "WarmerFunction"] {
        let props = at(&t, &["Resources", function, "Properties"]);
        let vars = at(props, &["Environment", "Variables"]);
        assert_eq!(
            strings(&vars["DATABASE_SECRET_ARN"]).into_iter().collect::<Vec<_>>(),
            ["AWS::NoValue", "DatabaseSecretArn", "UseSecret"],
            "{function}: the ARN only when a secret is used"
        );
        let text = serde_yaml::to_string(vars).unwrap();
        assert!(!text.contains("resolve:secretsmanager"), "{function}: no URL resolved into the configuration");
        let policies = at(props, &["Policies"]).as_sequence().unwrap();
        let grants: Vec<&Value> =
            policies.iter().filter(|p| serde_yaml::to_string(p).unwrap().contains("secretsmanager")).collect();
        assert_eq!(grants.len(), 1, "{function}: one grant on secrets");
        let grant = grants[0].as_sequence().expect("granted only under the UseSecret condition");
        assert_eq!(grant[0].as_str(), Some("UseSecret"));
        let statements = at(&grant[1], &["Statement"]).as_sequence().unwrap();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Action"].as_str(), Some("secretsmanager:GetSecretValue"));
        assert_eq!(statements[0]["Resource"].as_str(), Some("DatabaseSecretArn"));
        assert_eq!(grant[2].as_str(), Some("AWS::NoValue"));
    }
}

/// Metrics AWS publishes by itself, by namespace (what an alarm or widget may use besides ours).
const AWS_METRICS: &[(&str, &[&str])] = &[
    ("AWS/Lambda", &["Errors", "Throttles", "Invocations", "Duration", "ConcurrentExecutions"]),
    (
        "AWS/CloudFront",
        &["5xxErrorRate", "4xxErrorRate", "TotalErrorRate", "CacheHitRate", "OriginLatency", "Requests"],
    ),
    ("AWS/SQS", &["ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"]),
];

/// Checks that `namespace`/`name` is a metric the function `function` emits (edgerail) or AWS
/// publishes.
fn assert_metric_exists(what: &str, namespace: &str, name: &str, function: Option<&str>) {
    if namespace == "edgerail" {
        let emitted: &[&str] = match function {
            Some("ApiFunction") => api::metrics::NAMES,
            Some("WarmerFunction") => warmer::metrics::NAMES,
            other => panic!("{what}: edgerail metric {name} without a known FunctionName ({other:?})"),
        };
        assert!(emitted.contains(&name), "{what}: {function:?} does not emit {name}");
    } else {
        let known = AWS_METRICS.iter().find(|(ns, _)| *ns == namespace).map(|(_, m)| *m).unwrap_or_default();
        assert!(known.contains(&name), "{what}: {namespace} {name} is not a metric AWS publishes");
    }
}

fn function_dimension(dimensions: Option<&Value>) -> Option<String> {
    dimensions?
        .as_sequence()?
        .iter()
        .find(|d| d["Name"] == "FunctionName")
        .and_then(|d| d["Value"].as_str())
        .map(str::to_owned)
}

#[test]
fn every_alarm_watches_a_metric_that_exists() {
    let t = template();
    let resources = at(&t, &["Resources"]).as_mapping().unwrap();
    let alarms: Vec<(&str, &Value)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|(k, r)| (k.as_str().unwrap(), &r["Properties"]))
        .collect();
    for wanted in [
        "WarmerErrorsAlarm",
        "WarmerNonRetryableAlarm",
        "PendingAgeAlarm",
        "ApiErrorsAlarm",
        "ApiThrottlesAlarm",
        "EdgeErrorsAlarm",
        "InvalidationBudgetAlarm",
        "WarmerFailuresAlarm",
        "RepairFailedAlarm",
        "FreshnessAlarm",
    ] {
        assert!(alarms.iter().any(|(name, _)| *name == wanted), "{wanted} is missing");
    }
    for (name, props) in alarms {
        let metrics: Vec<&Value> = match props.get("Metrics") {
            Some(list) => {
                list.as_sequence().unwrap().iter().filter_map(|m| m.get("MetricStat")).map(|s| &s["Metric"]).collect()
            }
            None => vec![props],
        };
        assert!(!metrics.is_empty(), "{name}");
        for metric in metrics {
            let namespace = metric["Namespace"].as_str().unwrap();
            let metric_name = metric["MetricName"].as_str().unwrap();
            assert_metric_exists(name, namespace, metric_name, function_dimension(metric.get("Dimensions")).as_deref());
        }
        assert!(props.get("AlarmActions").is_some(), "{name} notifies the alarm topic when there is one");
    }
}

#[test]
fn the_dashboard_is_json_and_shows_metrics_that_exist() {
    let t = template();
    let body = at(&t, &["Resources", "Dashboard", "Properties", "DashboardBody"]).as_str().unwrap();
    let filled = body
        .replace("${AWS::Region}", "ap-northeast-1")
        .replace("${Distribution}", "E2QWRUHEXAMPLE")
        .replace("${ApiFunction}", "ApiFunction")
        .replace("${WarmerFunction}", "WarmerFunction");
    assert!(!filled.contains("${"), "an unexpected substitution: {filled}");
    let dashboard: serde_json::Value = serde_json::from_str(&filled).expect("the dashboard body is JSON");
    let mut titles = Vec::new();
    for widget in dashboard["widgets"].as_array().unwrap() {
        titles.push(widget["properties"]["title"].as_str().unwrap().to_owned());
        for row in widget["properties"]["metrics"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            let Some(namespace) = row[0].as_str() else { continue }; // an expression
            let function = row.iter().position(|v| v == "FunctionName").and_then(|i| row[i + 1].as_str());
            assert_metric_exists("Dashboard", namespace, row[1].as_str().unwrap(), function);
        }
    }
    for wanted in ["Edge cache hit rate", "In-process hit rate", "Origin latency", "Warmer ticks", "Invalidation paths"]
    {
        assert!(titles.iter().any(|t| t.starts_with(wanted)), "no {wanted} widget: {titles:?}");
    }
}

#[test]
fn the_stack_carries_its_operations() {
    let t = template();
    let resources = at(&t, &["Resources"]);
    assert_eq!(
        at(resources, &["DistributionMonitoring", "Type"]).as_str(),
        Some("AWS::CloudFront::MonitoringSubscription")
    );
    for (function, group) in [("ApiFunction", "ApiLogGroup"), ("WarmerFunction", "WarmerLogGroup")] {
        let logging = at(resources, &[function, "Properties", "LoggingConfig"]);
        assert_eq!(at(logging, &["LogFormat"]).as_str(), Some("JSON"));
        assert_eq!(at(logging, &["LogGroup"]).as_str(), Some(group));
        assert!(at(resources, &[group, "Properties", "RetentionInDays"]).as_str().is_some(), "{group} has a retention");
    }
    let invoke = at(resources, &["WarmerFunction", "Properties", "EventInvokeConfig"]);
    assert_eq!(at(invoke, &["MaximumRetryAttempts"]).as_u64(), Some(0), "the next tick is the retry");
    let on_failure = at(invoke, &["DestinationConfig", "OnFailure"]);
    assert_eq!(at(on_failure, &["Type"]).as_str(), Some("SQS"));
    assert_eq!(at(resources, &["WarmerFailures", "Type"]).as_str(), Some("AWS::SQS::Queue"));
}

/// The distribution's query-keyed cache policies and behaviours, generated from the policy: one
/// cache policy per distinct set of declared query parameters, keyed on exactly that set, and one
/// behaviour per route that declares any (its path with each parameter a `*`). Routes that declare
/// none fall to the default behaviour, which keys on no query string.
fn query_blocks(policy: &Policy) -> (String, String) {
    let mut groups: Vec<(Vec<String>, Vec<&cache_policy::Route>)> = Vec::new();
    for route in policy.routes().iter().filter(|r| !r.query.is_empty()) {
        let mut names: Vec<String> = route.query.iter().map(|q| q.name.clone()).collect();
        names.sort();
        match groups.iter_mut().find(|(n, _)| *n == names) {
            Some((_, routes)) => routes.push(route),
            None => groups.push((names, vec![route])),
        }
    }
    let resource = |names: &[String]| {
        let camel: String = names.iter().flat_map(|n| n.split('_')).map(|w| w[..1].to_uppercase() + &w[1..]).collect();
        format!("ApiQuery{camel}CachePolicy")
    };
    let mut policies = String::from(
        "  # BEGIN query cache policies: generated from cache-policy/policy.toml by the test\n  \
         # template::the_query_behaviours_are_the_policys (regenerate with EDGERAIL_BLESS=1); not edited by hand.\n",
    );
    for (names, routes) in &groups {
        let max_ttl = routes.iter().map(|r| r.edge_ttl.as_secs()).max().unwrap_or(0).max(86_400);
        policies.push_str(&format!(
            "  {}:\n    Type: AWS::CloudFront::CachePolicy\n    Properties:\n      CachePolicyConfig:\n        \
             Name: !Sub \"${{AWS::StackName}}-api-query-{}\"\n        \
             Comment: edgerail routes keyed on exactly their declared query parameters ({})\n        \
             MinTTL: 0\n        DefaultTTL: 0\n        MaxTTL: {max_ttl}\n        \
             ParametersInCacheKeyAndForwardedToOrigin:\n          EnableAcceptEncodingGzip: true\n          \
             EnableAcceptEncodingBrotli: true\n          HeadersConfig:\n            HeaderBehavior: none\n          \
             CookiesConfig:\n            CookieBehavior: none\n          QueryStringsConfig:\n            \
             QueryStringBehavior: whitelist\n            QueryStrings: [{}]\n",
            resource(names),
            names.join("-").replace('_', "-"),
            names.join(", "),
            names.join(", "),
        ));
    }
    policies.push_str("  # END query cache policies\n");
    let mut behaviours =
        String::from("        # BEGIN query behaviours: generated with the query cache policies above.\n");
    if !groups.is_empty() {
        behaviours.push_str("        CacheBehaviors:\n");
    }
    for (names, routes) in &groups {
        for route in routes {
            let pattern: String = route
                .path
                .segments()
                .iter()
                .map(|s| match s {
                    cache_policy::Segment::Literal(text) => format!("/{text}"),
                    cache_policy::Segment::Param(_) => "/*".to_owned(),
                })
                .collect();
            behaviours.push_str(&format!(
                "          - PathPattern: {pattern}\n            TargetOriginId: api\n            \
                 ViewerProtocolPolicy: https-only\n            AllowedMethods: [GET, HEAD, OPTIONS]\n            \
                 CachedMethods: [GET, HEAD, OPTIONS]\n            Compress: true\n            \
                 CachePolicyId: !Ref {}\n            OriginRequestPolicyId: !Ref ApiOriginRequestPolicy\n            \
                 ResponseHeadersPolicyId: !Ref ApiResponseHeadersPolicy\n",
                resource(names)
            ));
        }
    }
    behaviours.push_str("        # END query behaviours\n");
    (policies, behaviours)
}

#[test]
fn the_query_behaviours_are_the_policys() {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    let (policies, behaviours) = query_blocks(Policy::embedded().unwrap());
    let text = splice(&text, "  # BEGIN query cache policies", "  # END query cache policies", &policies);
    let text = splice(&text, "        # BEGIN query behaviours", "        # END query behaviours", &behaviours);
    assert_generated("template.yaml", &text, "the_query_behaviours");
}
