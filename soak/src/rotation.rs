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
//!
//! There are two secrets, rotated together: one names the server, the other PgBouncer in front of
//! it (which looks the roles' passwords up in the server with its `auth_query`, as a pooler in
//! front of rotated credentials must).

use std::time::{Duration, SystemTime};

use sqlx::Connection;

/// The two roles, and which one the secret names now.
#[derive(Debug)]
pub struct Rotation {
    moto: String,
    admin: String,
    /// Where each secret points: `host:port/db`.
    endpoints: [String; 2],
    /// The secrets' ARNs, in the order of `endpoints`.
    arns: [String; 2],
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
    /// be allowed to create roles), and two secrets named after `run` naming the first, in moto at
    /// `moto`: one points at `server`, the other at `pooler` (both `postgres://role:pw@host:port`).
    pub async fn set_up(moto: &str, server: &str, pooler: &str, database: &str, run: &str) -> anyhow::Result<Self> {
        let admin = format!("{server}/{database}");
        let endpoint = |url: &str| format!("{}/{database}", url.rsplit_once('@').map_or(url, |(_, r)| r));
        let endpoints = [endpoint(server), endpoint(pooler)];
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
        let mut rotation = Self {
            moto: moto.to_owned(),
            endpoints,
            arns: Default::default(),
            admin,
            roles,
            passwords,
            current: 0,
            turns: 0,
        };
        for (i, via) in ["server", "pooler"].into_iter().enumerate() {
            let name = format!("edgerail/soak/{run}/{via}");
            let created = rotation
                .call(
                    "secretsmanager.CreateSecret",
                    serde_json::json!({ "Name": name, "SecretString": rotation.value(i) }),
                )
                .await?;
            rotation.arns[i] = created["ARN"].as_str().ok_or_else(|| anyhow::anyhow!("no ARN: {created}"))?.to_owned();
        }
        Ok(rotation)
    }

    /// The secret that points at the server.
    pub fn server_arn(&self) -> &str {
        &self.arns[0]
    }

    /// The secret that points at PgBouncer.
    pub fn pooler_arn(&self) -> &str {
        &self.arns[1]
    }

    /// Secret `i`'s value for the current role, shaped as RDS stores it.
    fn value(&self, i: usize) -> String {
        let (authority, dbname) = self.endpoints[i].split_once('/').unwrap_or((&self.endpoints[i], ""));
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
        for (i, arn) in self.arns.iter().enumerate() {
            self.call(
                "secretsmanager.PutSecretValue",
                serde_json::json!({ "SecretId": arn, "SecretString": self.value(i) }),
            )
            .await?;
        }
        Ok(())
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
