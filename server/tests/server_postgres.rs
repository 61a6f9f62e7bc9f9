//! `cairn serve --metadata postgres://...`: two servers on one PostgreSQL (a private server on
//! 127.0.0.1 started by the tests, see tests/common/pg.rs), clients spread over both writing
//! the same name: versions gapless, every acknowledged artifact readable from either server.
#![cfg(feature = "postgres")]

use crate::common;
use crate::pg;

use std::collections::BTreeSet;

use cairn_server::state::tenant_namespace;
use cairn_server::ServerConfig;
use common::TestServer;
use serde_json::json;

#[test]
fn two_servers_on_one_postgres_share_every_tenant_record() {
    let Some(url) = pg::url() else { return };
    // A fresh namespace for the open-mode tenant, whatever an earlier run left.
    cairn::PostgresBackend::connect(&url, &tenant_namespace("default"))
        .unwrap()
        .drop_namespace()
        .unwrap();
    let servers: Vec<TestServer> = (0..2)
        .map(|_| TestServer::start_with(|c| c.metadata = Some(url.clone())))
        .collect();
    let s = servers[0].anon().session(&json!({"name": "shared"}));
    // The session made on one server is there on the other.
    assert_eq!(
        servers[1].anon().get(&format!("/v1/sessions/{s}")).status,
        200
    );
    const CLIENTS: usize = 4;
    const PUTS: usize = 6;
    let acked: Vec<(u64, String, Vec<u8>)> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let c = servers[i % 2].anon();
                let s = s.clone();
                scope.spawn(move || {
                    (0..PUTS)
                        .map(|j| {
                            let body = format!("client {i} put {j}").into_bytes();
                            let a = c.put(&s, "same.txt", &body);
                            (
                                a["version"].as_u64().unwrap(),
                                a["id"].as_str().unwrap().to_string(),
                                body,
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let versions: BTreeSet<u64> = acked.iter().map(|(v, _, _)| *v).collect();
    let want: BTreeSet<u64> = (1..=(CLIENTS * PUTS) as u64).collect();
    assert_eq!(versions, want, "versions gapless and unique across servers");
    for (i, (_, id, body)) in acked.iter().enumerate() {
        let other = servers[(i + 1) % 2].anon();
        let r = other.get(&format!("/v1/artifacts/{id}/content"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(&r.body, body);
    }
}

#[test]
fn a_metadata_url_that_is_not_postgres_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ServerConfig::new(dir.path());
    c.metadata = Some("mysql://x".into());
    let e = cairn_server::spawn(c).err().unwrap();
    assert!(e.contains("postgres://"), "{e}");
}
