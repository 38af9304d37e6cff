# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_api_global_optspecs
    string join \n database-url= database-secret-arn= sqlite-path= bind-addr= service-tz= service-day-start= cache-tag-header= change-poll-interval= change-poll-wait= change-poll-timeout= change-max-lag= local-cache-max-bytes= db-max-connections= db-acquire-timeout= db-statement-timeout= db-idle-timeout= db-proxy-compat= metrics= metrics-interval= learn-flush-interval= learn-max-paths= warm-secret= log-format= shutdown-timeout= build-id= lambda-memory-mb= lambda-runtime-api= h/help V/version
end

function __fish_api_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_api_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_api_using_subcommand
    set -l cmd (__fish_api_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c api -n "__fish_api_needs_command" -l database-url -d 'PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset, serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda it is required, or DATABASE_SECRET_ARN' -r
complete -c api -n "__fish_api_needs_command" -l database-secret-arn -d 'AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when DATABASE_URL is unset (docs/deploy.md lists the shapes understood)' -r
complete -c api -n "__fish_api_needs_command" -l sqlite-path -d 'SQLite file used when DATABASE_URL is unset' -r -F
complete -c api -n "__fish_api_needs_command" -l bind-addr -d 'Address of the local HTTP server' -r
complete -c api -n "__fish_api_needs_command" -l service-tz -d 'IANA time zone of the timetable' -r
complete -c api -n "__fish_api_needs_command" -l service-day-start -d 'Local time (HH:MM) at which a service day starts' -r
complete -c api -n "__fish_api_needs_command" -l cache-tag-header -d 'Response header that carries cache tags (CloudFront\'s CacheTagConfig, Varnish xkey)' -r
complete -c api -n "__fish_api_needs_command" -l change-poll-interval -d 'How often an instance that is serving checks the change feed' -r
complete -c api -n "__fish_api_needs_command" -l change-poll-wait -d 'How long a request waits for a due change poll before answering from the cache anyway (not at all while the last poll took longer than this, or failed)' -r
complete -c api -n "__fish_api_needs_command" -l change-poll-timeout -d 'How long one change poll\'s statement may run (a locked or slow feed fails the poll, not requests)' -r
complete -c api -n "__fish_api_needs_command" -l change-max-lag -d 'The freshness bound: a cached answer not vouched for by a successful change poll within this long is reloaded instead of served. The warmer\'s WARMER_SETTLE must be at least this' -r
complete -c api -n "__fish_api_needs_command" -l local-cache-max-bytes -d 'Byte bound of the in-process cache, its fresh entries and stale-if-error copies together; 0 turns it off [default: a quarter of the function\'s memory on Lambda, 64 MiB locally]' -r
complete -c api -n "__fish_api_needs_command" -l db-max-connections -d 'Pooled PostgreSQL connections [default: 1 on Lambda, 10 locally]' -r
complete -c api -n "__fish_api_needs_command" -l db-acquire-timeout -d 'Longest wait for a connection before answering 503 (a login refused with credentials from a secret then waits up to as long for the secret\'s re-read, within the read\'s own bound)' -r
complete -c api -n "__fish_api_needs_command" -l db-statement-timeout -d 'Server-side timeout of each statement' -r
complete -c api -n "__fish_api_needs_command" -l db-idle-timeout -d 'Idle connections are closed after this [default: 30s on Lambda, 10m locally]' -r
complete -c api -n "__fish_api_needs_command" -l db-proxy-compat -d 'No named prepared statements (PgBouncer transaction pooling, RDS Proxy) [default: on for Lambda, off locally]' -r -f -a "true\t''
false\t''"
complete -c api -n "__fish_api_needs_command" -l metrics -d 'CloudWatch Embedded Metric Format lines on stdout [default: on Lambda, off locally]' -r -f -a "emf\t'Embedded Metric Format lines on stdout'
off\t'None'"
complete -c api -n "__fish_api_needs_command" -l metrics-interval -d 'How often the metrics of an instance that is serving are written' -r
complete -c api -n "__fish_api_needs_command" -l learn-flush-interval -d 'How often an instance that is serving adds the paths it answered for the edge to the learned warm set (one statement); 0 turns learning off' -r
complete -c api -n "__fish_api_needs_command" -l learn-max-paths -d 'Most distinct paths an instance counts between two flushes (the rest are not counted)' -r
complete -c api -n "__fish_api_needs_command" -l warm-secret -d 'The value of `x-edgerail-warm` that marks the warmer\'s own fetches (the warmer\'s WARM_SECRET): they are not learned. A viewer cannot forge it; a request with any other value is a viewer\'s. Unset: every fetch is learned, the warmer\'s too' -r
complete -c api -n "__fish_api_needs_command" -l log-format -d 'Log format [default: AWS_LAMBDA_LOG_FORMAT on Lambda, else json there and text locally]. Filter with RUST_LOG (else AWS_LAMBDA_LOG_LEVEL, else info)' -r -f -a "json\t'One JSON object per line (CloudWatch Logs Insights can query it), with the current span\'s fields, so a line can be tied to its request or warmer tick'
text\t'Human-readable lines'"
complete -c api -n "__fish_api_needs_command" -l shutdown-timeout -d 'Local server: how long to wait for in-flight requests after SIGTERM/Ctrl-C' -r
complete -c api -n "__fish_api_needs_command" -l build-id -d 'The build id `/health-check` reports [default: a hash of the code this binary was built from]. The warmer invalidates the edge once when it sees a new one' -r
complete -c api -n "__fish_api_needs_command" -l lambda-memory-mb -d 'Set by the Lambda service: the function\'s memory size in MB, which bounds the cache there' -r
complete -c api -n "__fish_api_needs_command" -l lambda-runtime-api -d 'Set by the Lambda service; its presence selects Lambda mode' -r
complete -c api -n "__fish_api_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c api -n "__fish_api_needs_command" -s V -l version -d 'Print version'
complete -c api -n "__fish_api_needs_command" -f -a "serve" -d 'Serve the API (on Lambda when AWS_LAMBDA_RUNTIME_API is set, else on BIND_ADDR)'
complete -c api -n "__fish_api_needs_command" -f -a "migrate" -d 'Apply the embedded database migrations and record the service calendar'
complete -c api -n "__fish_api_needs_command" -f -a "seed" -d 'Replace all data with generated demo data (migrating first)'
complete -c api -n "__fish_api_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c api -n "__fish_api_using_subcommand serve" -s h -l help -d 'Print help'
complete -c api -n "__fish_api_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c api -n "__fish_api_using_subcommand seed" -l scale -d 'Multiplies the number of sightings (1 gives about 100k)' -r
complete -c api -n "__fish_api_using_subcommand seed" -l days -d 'Service days the sightings are spread over, today included (3650: ten years of a site), each past day alike and today by the part of its service hours that has passed (none before 05:00); operations cover them and two weeks ahead' -r
complete -c api -n "__fish_api_using_subcommand seed" -l demo -d 'Load the demo data set (the only data set there is; required so seeding is explicit)'
complete -c api -n "__fish_api_using_subcommand seed" -s h -l help -d 'Print help'
complete -c api -n "__fish_api_using_subcommand help; and not __fish_seen_subcommand_from serve migrate seed help" -f -a "serve" -d 'Serve the API (on Lambda when AWS_LAMBDA_RUNTIME_API is set, else on BIND_ADDR)'
complete -c api -n "__fish_api_using_subcommand help; and not __fish_seen_subcommand_from serve migrate seed help" -f -a "migrate" -d 'Apply the embedded database migrations and record the service calendar'
complete -c api -n "__fish_api_using_subcommand help; and not __fish_seen_subcommand_from serve migrate seed help" -f -a "seed" -d 'Replace all data with generated demo data (migrating first)'
complete -c api -n "__fish_api_using_subcommand help; and not __fish_seen_subcommand_from serve migrate seed help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
