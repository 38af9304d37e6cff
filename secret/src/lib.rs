//! The database URL from AWS Secrets Manager, read once when a process starts.
//!
//! A deployment can keep the URL out of its configuration: `DATABASE_SECRET_ARN` names a secret,
//! and the process asks Secrets Manager for it. The secret is either `{"url": "postgres://…"}` or
//! the shape RDS gives database credentials, `{"username", "password", "host", "port", "dbname"}`;
//! for an RDS host the URL asks for `sslmode=verify-full`, which the store checks against the RDS
//! certificate authorities it embeds.
//!
//! One `GetSecretValue` call, signed by the AWS SDK's own Signature Version 4 signer
//! (`aws-sigv4`) and sent with hyper (which the Lambda runtime already links) over rustls with the
//! system's certificate store. The whole SDK client, or a general HTTP client, would be a large
//! share of the API's zip for one request per cold start. The endpoint follows the SDKs'
//! conventions (`AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL`, else the region's), so
//! tests point it at moto.
//!
//! Credentials are the caller's to find: [`Credentials::from_env`] reads the variables Lambda
//! sets (the API, whose zip has no room for the SDK's credential chain), and a binary that links
//! `aws-config` passes what its chain resolved (profiles, SSO, the container or instance role).

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Deserialize;

/// Why the secret gave no database URL. Never carries the secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment lacks what the request needs.
    #[error("cannot read the database secret: {0} is not set")]
    Environment(&'static str),
    /// Secrets Manager could not be reached (connection, TLS, HTTP, or no answer in 10 s).
    #[error("cannot reach Secrets Manager at {endpoint}")]
    Unreachable {
        /// The endpoint asked.
        endpoint: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request could not be signed with these credentials.
    #[error("cannot sign the Secrets Manager request: {0}")]
    Signing(String),
    /// Secrets Manager refused (no such secret, access denied, …).
    #[error("Secrets Manager refused the database secret: {status} {code}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The AWS error code (`ResourceNotFoundException`, `AccessDeniedException`, …).
        code: String,
    },
    /// The secret is not one of the understood shapes.
    #[error(
        "the database secret must be JSON with \"url\", or with \"username\", \"password\" and \"host\" (\"port\" and \"dbname\" optional): {0}"
    )]
    Shape(&'static str),
}

/// AWS credentials and the region to ask.
#[derive(Clone)]
pub struct Credentials {
    /// The key, secret and session token.
    pub identity: aws_credential_types::Credentials,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`).
    pub region: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SDK's type redacts the secret parts itself.
        f.debug_struct("Credentials").field("identity", &self.identity).field("region", &self.region).finish()
    }
}

impl Credentials {
    /// From the environment, as Lambda provides them (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`).
    ///
    /// # Errors
    ///
    /// A variable is missing.
    pub fn from_env() -> Result<Self, SecretError> {
        let identity = aws_credential_types::Credentials::new(
            var("AWS_ACCESS_KEY_ID").ok_or(SecretError::Environment("AWS_ACCESS_KEY_ID"))?,
            var("AWS_SECRET_ACCESS_KEY").ok_or(SecretError::Environment("AWS_SECRET_ACCESS_KEY"))?,
            var("AWS_SESSION_TOKEN"),
            None,
            "environment",
        );
        Ok(Self { identity, region: region_from_env()? })
    }
}

/// A variable of the environment, unless unset or empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
///
/// # Errors
///
/// Neither is set.
pub fn region_from_env() -> Result<String, SecretError> {
    var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).ok_or(SecretError::Environment("AWS_REGION"))
}

/// The Secrets Manager endpoint: the SDKs' override variables, else the region's.
fn endpoint(region: &str) -> String {
    std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|v| !v.is_empty())
        .map_or_else(
            || format!("https://secretsmanager.{region}.amazonaws.com"),
            |e| e.trim_end_matches('/').to_owned(),
        )
}

/// Reads the secret `secret_id` (name or ARN) and turns it into a database URL.
///
/// # Errors
///
/// [`SecretError`]: no credentials, no answer, a refusal, or a secret of another shape.
pub async fn database_url(secret_id: &str, credentials: &Credentials) -> Result<String, SecretError> {
    let endpoint = endpoint(&credentials.region);
    let body = serde_json::json!({ "SecretId": secret_id }).to_string();
    let unreachable = |source: BoxError| SecretError::Unreachable { endpoint: endpoint.clone(), source };
    let uri: http::Uri = format!("{endpoint}/").parse().map_err(|e: http::uri::InvalidUri| unreachable(e.into()))?;
    let request = signed_request(credentials, &uri, "secretsmanager.GetSecretValue", body, SystemTime::now())?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), post(&uri, request))
        .await
        .map_err(|elapsed| unreachable(elapsed.into()))?;
    let (status, text) = answer.map_err(unreachable)?;
    if !status.is_success() {
        #[derive(Deserialize)]
        struct AwsError {
            #[serde(rename = "__type", default)]
            kind: String,
        }
        let kind = serde_json::from_slice::<AwsError>(&text).map(|e| e.kind).unwrap_or_default();
        // `__type` may carry a namespace: `com.amazonaws.secretsmanager#ResourceNotFoundException`.
        let code = kind.rsplit('#').next().unwrap_or_default().to_owned();
        return Err(SecretError::Refused { status: status.as_u16(), code });
    }
    #[derive(Deserialize)]
    struct Value {
        #[serde(rename = "SecretString")]
        secret_string: Option<String>,
    }
    let value: Value = serde_json::from_slice(&text).map_err(|_| SecretError::Shape("not a GetSecretValue answer"))?;
    url_from_secret(&value.secret_string.ok_or(SecretError::Shape("the secret has no SecretString"))?)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends the signed `request` to `uri`'s host, over HTTPS (the system's certificate authorities)
/// or, for a local stand-in such as moto, plain HTTP; the status and body.
async fn post(
    uri: &http::Uri,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(http::StatusCode, bytes::Bytes), BoxError> {
    let host = uri.host().ok_or("the endpoint has no host")?;
    let bare_host = host.trim_matches(['[', ']']);
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the endpoint must be an http or https URL".into()),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((bare_host, port)).await?;
    if tls {
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())?;
        let stream = tls_connector()?.connect(name, tcp).await?;
        exchange(stream, request).await
    } else {
        exchange(tcp, request).await
    }
}

/// rustls on ring, trusting the system's certificate store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
/// override it, as for OpenSSL).
fn tls_connector() -> Result<tokio_rustls::TlsConnector, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err("no certificate authorities in the system's store".into());
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// One HTTP/1.1 exchange on `io`.
async fn exchange<I>(
    io: I,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(http::StatusCode, bytes::Bytes), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    // The connection's task moves the bytes; it is stopped once the answer is read.
    let connection = tokio::spawn(connection);
    let answer = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        // A secret is at most 64 KiB; anything much longer is not Secrets Manager's answer.
        let body = http_body_util::Limited::new(response.into_body(), 1 << 20).collect().await?.to_bytes();
        Ok::<_, BoxError>((status, body))
    }
    .await;
    connection.abort();
    answer
}

/// The database URL a secret's string describes.
///
/// # Errors
///
/// [`SecretError::Shape`] for anything else.
pub fn url_from_secret(secret: &str) -> Result<String, SecretError> {
    #[derive(Deserialize)]
    struct Shape {
        url: Option<String>,
        username: Option<String>,
        password: Option<String>,
        host: Option<String>,
        port: Option<serde_json::Value>,
        dbname: Option<String>,
    }
    let shape: Shape =
        serde_json::from_str(secret).map_err(|_| SecretError::Shape("the secret is not a JSON object"))?;
    if let Some(url) = shape.url {
        return Ok(url);
    }
    let (Some(username), Some(password), Some(host)) = (shape.username, shape.password, shape.host) else {
        return Err(SecretError::Shape("fields are missing"));
    };
    let port = match shape.port {
        None => 5432,
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or(SecretError::Shape("port"))?
        }
        Some(serde_json::Value::String(s)) => s.parse().map_err(|_| SecretError::Shape("port"))?,
        Some(_) => return Err(SecretError::Shape("port")),
    };
    let dbname = shape.dbname.unwrap_or_else(|| "postgres".to_owned());
    let mut url = format!("postgres://{}:{}@{host}:{port}/{}", encode(&username), encode(&password), encode(&dbname));
    if is_rds_host(&host) {
        url.push_str("?sslmode=verify-full");
    }
    Ok(url)
}

/// Whether `host` is an RDS or Aurora endpoint (instance, cluster or proxy), whose certificate
/// the embedded authorities can verify.
pub fn is_rds_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.ends_with(".rds.amazonaws.com") || host.ends_with(".rds.amazonaws.com.cn")
}

/// Percent-encodes everything but unreserved characters (for a URL's user, password and path).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `POST /` of a JSON-protocol call (`target`, e.g. `secretsmanager.GetSecretValue`) to `uri`,
/// signed for Secrets Manager with Signature Version 4 as of `now`. The request carries its own
/// `Host` header: hyper's connection-level client writes none itself.
///
/// # Errors
///
/// [`SecretError::Signing`]: the signer refused the request or the credentials.
pub fn signed_request(
    credentials: &Credentials,
    uri: &http::Uri,
    target: &str,
    body: String,
    now: SystemTime,
) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, SecretError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};

    let signing = |e: &dyn std::fmt::Display| SecretError::Signing(e.to_string());
    let host = uri.authority().map(|a| a.as_str().to_owned()).ok_or_else(|| signing(&"the endpoint has no host"))?;
    let headers = [("content-type", "application/x-amz-json-1.1"), ("host", host.as_str()), ("x-amz-target", target)];
    let identity = credentials.identity.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&credentials.region)
        .name("secretsmanager")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| signing(&e))?
        .into();
    let signable =
        SignableRequest::new("POST", uri.to_string(), headers.into_iter(), SignableBody::Bytes(body.as_bytes()))
            .map_err(|e| signing(&e))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| signing(&e))?.into_parts();
    let mut request = http::Request::post("/");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let mut request = request.body(http_body_util::Full::new(bytes::Bytes::from(body))).map_err(|e| signing(&e))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_of_both_shapes_become_urls() {
        assert_eq!(url_from_secret(r#"{"url": "postgres://a:b@h/d"}"#).unwrap(), "postgres://a:b@h/d");
        let rds = r#"{"engine": "postgres", "host": "db.abc123.eu-west-1.rds.amazonaws.com", "port": 5432,
                      "username": "edge rail", "password": "p@ss:w/rd%", "dbname": "edgerail", "dbInstanceIdentifier": "db"}"#;
        assert_eq!(
            url_from_secret(rds).unwrap(),
            "postgres://edge%20rail:p%40ss%3Aw%2Frd%25@db.abc123.eu-west-1.rds.amazonaws.com:5432/edgerail?sslmode=verify-full"
        );
        let local = r#"{"host": "127.0.0.1", "port": "6432", "username": "u", "password": "p"}"#;
        assert_eq!(url_from_secret(local).unwrap(), "postgres://u:p@127.0.0.1:6432/postgres");
        for bad in [
            "postgres://a:b@h/d",
            r#"{"username": "u"}"#,
            r#"{"host": "h", "username": "u", "password": "p", "port": 70000}"#,
        ] {
            let err = url_from_secret(bad).unwrap_err().to_string();
            assert!(!err.contains("p@ss") && err.contains("database secret"), "{err}");
        }
    }

    /// The request carries what Secrets Manager checks: the SDK's signature over the host, the
    /// target and the session token.
    #[test]
    fn requests_carry_a_signature_over_host_target_and_session_token() {
        let credentials = Credentials {
            identity: aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                Some("session/token+value=".into()),
                None,
                "test",
            ),
            region: "eu-west-1".into(),
        };
        let uri: http::Uri = "https://secretsmanager.eu-west-1.amazonaws.com/".parse().unwrap();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let request = signed_request(&credentials, &uri, "secretsmanager.GetSecretValue", "{}".into(), now).unwrap();
        let header = |name: &str| request.headers().get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header("host"), "secretsmanager.eu-west-1.amazonaws.com");
        assert_eq!(header("x-amz-security-token"), "session/token+value=");
        let authorization = header("authorization");
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{authorization}");
        assert!(authorization.contains("/eu-west-1/secretsmanager/aws4_request"), "{authorization}");
        for signed in ["content-type", "host", "x-amz-date", "x-amz-security-token", "x-amz-target"] {
            assert!(authorization.contains(signed), "{signed} is signed: {authorization}");
        }
        assert!(!format!("{credentials:?}").contains("wJalrXUtnFEMI"), "Debug hides the secret key");
    }

    #[test]
    fn rds_hosts_are_recognised() {
        assert!(is_rds_host("x.cluster-ro-abc.us-east-1.RDS.amazonaws.com"));
        assert!(is_rds_host("p.proxy-abc.cn-north-1.rds.amazonaws.com.cn"));
        assert!(!is_rds_host("rds.amazonaws.com.example.org"));
    }
}
