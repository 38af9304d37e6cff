//! The README's first command: with no configuration the binary creates, migrates and seeds the
//! embedded SQLite database, then serves on BIND_ADDR.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn first_run_creates_seeds_and_serves_the_embedded_database() {
    let dir = std::env::temp_dir().join(format!("edgerail-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(binary("api"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening") {
                return;
            }
        }
        panic!("the server exited before listening");
    });
    ready.await.expect("serves within a minute on first run");
    assert!(dir.join("data/edgerail.sqlite").exists());

    let client = reqwest::Client::new();
    let res = client.get(format!("http://127.0.0.1:{port}/v1/formations")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["formations"].as_array().unwrap().len(), 100);
    let res = client.get(format!("http://127.0.0.1:{port}/v1/sightings/latest?limit=200")).send().await.unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["sightings"].as_array().unwrap().len(), 200);
    let today = client.get(format!("http://127.0.0.1:{port}/v1/operations/today")).send().await.unwrap();
    let body: serde_json::Value = today.json().await.unwrap();
    assert_eq!(body["operations"].as_array().unwrap().len(), 300, "today always has data");

    // SIGTERM: stop accepting, drain, close the pool, exit cleanly.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(exit.success());
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
    }
    assert!(rest.contains("database pool closed"), "{rest}");
    let _ = std::fs::remove_dir_all(&dir);
}
