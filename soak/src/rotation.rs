//! Credential rotation as RDS does it, against the soak's PostgreSQL and a local Secrets Manager
//! (moto): the instances that read their URL from the secret, and the warmer, log in as a role
//! whose password changes mid-run.
//!
//! - **One user**: the role's password changes in PostgreSQL, and the secret says so a moment
//!   later (RDS sets the new password, then makes the new version current). In between, the
//!   secret's credentials are refused.
//! - **Alternating users**: two roles; the secret moves to the other one (whose password was set
//!   at the previous rotation), then the role it left gets a new password.
//!
//! Either way the rotated role's open connections are ended, so the next login is a new one.

use std::time::{Duration, SystemTime};

use sqlx::Connection;

/// The two roles, and which one the secret names now.
#[derive(Debug)]
pub struct Rotation {
    moto: String,
    arn: String,
    admin: String,
    /// `postgres://…@host:port/db` with the credentials cut out: `{role}:{password}@` goes first.
    rest: String,
    roles: [String; 2],
    passwords: [String; 2],
    current: usize,
    turns: u64,
}

/// Runs `statements` on a connection of its own, one after the other, as an administrator would.
async fn admin_sql(url: &str, statements: &[String]) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    for statement in statements {
        sqlx::query(statement).execute(&mut conn).await?;
    }
    Ok(())
}

/// Credentials moto accepts (it checks no signature).
fn credentials() -> secret::Credentials {
    secret::Credentials {
        identity: aws_credential_types::Credentials::new("testing", "testing", None, None, "soak"),
        region: "us-east-1".into(),
    }
}

/// The environment a process needs to read the secret from moto.
pub fn secret_env(moto: &str, arn: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_SECRET_ARN", arn),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", moto),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Rotation {
    /// Creates the two roles (again) with every right on `database`'s tables (`server`'s role must
    /// be allowed to create roles), and a secret named after `run` naming the first, in moto at
    /// `moto`.
    pub async fn set_up(moto: &str, server: &str, database: &str, run: &str) -> anyhow::Result<Self> {
        let admin = format!("{server}/{database}");
        let rest = format!("{}/{database}", server.rsplit_once('@').map_or(server, |(_, r)| r));
        let roles = ["soak_rot_a".to_owned(), "soak_rot_b".to_owned()];
        let passwords = ["rot-a-0".to_owned(), "rot-b-0".to_owned()];
        for (role, password) in roles.iter().zip(&passwords) {
            let statements = [
                format!("DROP ROLE IF EXISTS {role}"),
                format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
                format!("GRANT {role} TO CURRENT_USER"),
                format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
                format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
            ];
            admin_sql(&admin, &statements).await?;
        }
        let mut rotation =
            Self { moto: moto.to_owned(), arn: String::new(), admin, rest, roles, passwords, current: 0, turns: 0 };
        let name = format!("edgerail/soak/{run}");
        let created = rotation
            .call("secretsmanager.CreateSecret", serde_json::json!({ "Name": name, "SecretString": rotation.value() }))
            .await?;
        rotation.arn = created["ARN"].as_str().ok_or_else(|| anyhow::anyhow!("no ARN: {created}"))?.to_owned();
        Ok(rotation)
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The secret's value for the current role, shaped as RDS stores it.
    fn value(&self) -> String {
        let (authority, dbname) = self.rest.split_once('/').unwrap_or((&self.rest, ""));
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "5432"));
        serde_json::json!({
            "engine": "postgres",
            "host": host,
            "port": port.parse::<u16>().unwrap_or(5432),
            "username": self.roles[self.current],
            "password": self.passwords[self.current],
            "dbname": dbname,
        })
        .to_string()
    }

    /// One rotation; `window` is how long the secret lags the database. Returns what it did.
    pub async fn rotate(&mut self, alternating: bool, window: Duration) -> anyhow::Result<String> {
        self.turns += 1;
        let left = self.current;
        if alternating {
            // The secret moves to the other role, then the role it left gets a new password.
            self.current = 1 - left;
            self.put().await?;
            tokio::time::sleep(window).await;
            self.passwords[left] = format!("rot-{left}-{}", self.turns);
            self.set_password(left).await?;
            Ok(format!(
                "alternating users: secret to {}, then {}'s password",
                self.roles[self.current], self.roles[left]
            ))
        } else {
            self.passwords[left] = format!("rot-{left}-{}", self.turns);
            self.set_password(left).await?;
            tokio::time::sleep(window).await;
            self.put().await?;
            Ok(format!("one user: {}'s password, then the secret {} ms later", self.roles[left], window.as_millis()))
        }
    }

    async fn set_password(&self, role: usize) -> anyhow::Result<()> {
        let role_name = &self.roles[role];
        let statements = [
            format!("ALTER ROLE {role_name} PASSWORD '{}'", self.passwords[role]),
            format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role_name}'"),
        ];
        admin_sql(&self.admin, &statements).await
    }

    async fn put(&self) -> anyhow::Result<()> {
        self.call(
            "secretsmanager.PutSecretValue",
            serde_json::json!({ "SecretId": self.arn, "SecretString": self.value() }),
        )
        .await
        .map(drop)
    }

    /// One signed Secrets Manager call to moto.
    async fn call(&self, target: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let body = body.to_string();
        let uri: http::Uri = format!("{}/", self.moto).parse()?;
        let request = {
            let signed = secret::signed_request(&credentials(), &uri, target, body.clone(), SystemTime::now())?;
            let mut request = reqwest::Client::new().post(format!("{}/", self.moto)).body(body);
            for (name, value) in signed.headers() {
                request = request.header(name.as_str(), value.to_str()?);
            }
            request
        };
        let response = request.send().await?.error_for_status()?;
        Ok(response.json().await?)
    }
}
