//! The local edge as the measurements and the soak run it: Varnish with the project's VCL
//! (`local/varnish.vcl`), its backend pointed at a given port, on a loopback port of its own.

use std::path::{Path, PathBuf};

/// A running Varnish; stopped when dropped.
#[derive(Debug)]
pub struct Varnish {
    /// Its base URL (`http://127.0.0.1:port`).
    pub url: String,
    /// The process.
    child: tokio::process::Child,
}

impl Varnish {
    /// Starts `varnishd` with `vcl`, its backend pointed at `backend_port` on loopback, its state
    /// under `dir/name` and its VCL copy at `dir/name.vcl`.
    ///
    /// # Errors
    ///
    /// The VCL cannot be read or written, no port is free, or `varnishd` does not start.
    pub fn start(varnishd: &Path, vcl: &Path, backend_port: u16, dir: &Path, name: &str) -> anyhow::Result<Self> {
        let port = crate::free_addr()?.port();
        let text = std::fs::read_to_string(vcl)?.replace(".port = \"3000\";", &format!(".port = \"{backend_port}\";"));
        let copy: PathBuf = dir.join(format!("{name}.vcl"));
        std::fs::write(&copy, text)?;
        let state = dir.join(name);
        let _ = std::fs::remove_dir_all(&state);
        let child = tokio::process::Command::new(varnishd)
            .arg("-F")
            .arg("-n")
            .arg(&state)
            .arg("-a")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-f")
            .arg(std::fs::canonicalize(&copy)?)
            .args(["-s", "malloc,256m", "-p", "thread_pool_min=20"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { url: format!("http://127.0.0.1:{port}"), child })
    }

    /// Stops it now.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Waits until `url` answers a success (at most 30 s).
///
/// # Errors
///
/// It did not.
pub async fn wait_http(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not answer")
}
