//! Downloads on both sides of `WHOLE_ANSWER_MAX` (answered from one verified buffer below it,
//! streamed above it): the same bytes, ETag, 304 and ranges either way.

use crate::common;

use cairn_server::api::v1::content::WHOLE_ANSWER_MAX;
use common::TestServer;
use serde_json::json;

#[test]
fn small_and_large_content_answer_the_same_way() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({}));
    let max = usize::try_from(WHOLE_ANSWER_MAX).unwrap();
    for size in [0, 1, max - 1, max, max + 1, 3 * max + 7] {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let a = c.put(&s, &format!("f{size}"), &body);
        let path = format!("/v1/artifacts/{}/content", a["id"].as_str().unwrap());
        let r = c.get(&path);
        assert_eq!(r.status, 200, "{size}");
        assert_eq!(r.body, body, "{size}");
        assert_eq!(
            r.header("content-length").as_deref(),
            Some(size.to_string().as_str())
        );
        let etag = r.header("etag").unwrap();
        assert_eq!(etag, format!("\"{}\"", a["hash"].as_str().unwrap()));
        let r = c.call("GET", &path, &[("if-none-match", &etag)]);
        assert_eq!((r.status, r.body.len()), (304, 0), "{size}");
        if size == 0 {
            let r = c.call("GET", &path, &[("range", "bytes=0-")]);
            assert_eq!(r.status, 416);
            continue;
        }
        let (from, to) = (size / 3, size - 1);
        let r = c.call("GET", &path, &[("range", &format!("bytes={from}-"))]);
        assert_eq!(r.status, 206, "{size}");
        assert_eq!(r.body, &body[from..], "{size}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {from}-{to}/{size}"))
        );
        let r = c.call("GET", &path, &[("range", "bytes=-1")]);
        assert_eq!(r.body, &body[size - 1..], "{size}");
        let r = c.call("GET", &path, &[("range", &format!("bytes={size}-"))]);
        assert_eq!(r.status, 416, "{size}");
    }
}
