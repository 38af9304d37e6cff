//! Statements work through PgBouncer in transaction pooling mode (as behind RDS Proxy).

use futures_util::future::join_all;

use crate::helpers::{Backend, TestApp, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn every_route_works_through_pgbouncer_transaction_pooling() {
    let db = TestDb::new(Backend::Postgres).await;
    let direct = TestApp::with(db.clone(), &[]).await;
    let pooled_args = ["--db-proxy-compat", "true", "--local-cache-max-bytes", "0", "--db-max-connections", "3"];
    // Two instances share PgBouncer's server connections, as Lambda instances would.
    let a = TestApp::with_url(db.clone(), &db.via_pgbouncer(), &pooled_args).await;
    let b = TestApp::with_url(db.clone(), &db.via_pgbouncer(), &pooled_args).await;

    let day = crate::helpers::calendar().service_date(chrono::Utc::now());
    let uris = [
        "/v1/lines".to_owned(),
        "/v1/lines/sakura/stations".to_owned(),
        "/v1/formations".to_owned(),
        "/v1/formations/5051F".to_owned(),
        format!("/v1/operations/{day}"),
        format!("/v1/operations/{day}/02S"),
        "/v1/sightings/latest?limit=20".to_owned(),
        "/health-check?deep=1".to_owned(),
    ];
    for uri in &uris {
        let expected = direct.get(uri).await;
        assert_eq!(expected.status, 200, "{uri}");
        // Many concurrent requests, so server connections are reused across clients.
        let responses =
            join_all((0..12).flat_map(|i| [if i % 2 == 0 { &a } else { &b }].map(|app| app.get(uri)))).await;
        for res in responses {
            assert_eq!(res.status, 200, "{uri}: {:?}", res.body);
            assert_eq!(res.body, expected.body, "{uri}");
            if uri.starts_with("/v1") {
                assert_eq!(res.header("x-local-cache"), "miss", "cache is off: every request hit the database");
            }
        }
    }
    // A data write through the pooler's neighbour is seen through it too (the change feed works).
    db.exec("UPDATE lines SET color = '#000000' WHERE id = 'sakura'").await;
    let res = a.get("/v1/lines/sakura/stations").await;
    assert_eq!(res.json()["line"]["color"], "#000000");
}
