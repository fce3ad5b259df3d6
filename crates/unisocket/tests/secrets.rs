//! Secrets in URLs and headers: the user info of a `ws://` URL is sent as
//! Basic credentials over a real socket (unless the application set its own
//! `Authorization`), and no password or secret header value shows in
//! `Debug`, error messages or events.

mod support;

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::sync::mpsc;

use support::codec::Request;
use support::{bounded, wait_until, within, ServerOptions, TestServer};
use unisocket::{connect_socket, CloseOptions, ConnectOptions, ErrorKind};

/// An echo server that reports each upgrade request it receives.
async fn recording_server() -> (TestServer, mpsc::UnboundedReceiver<Request>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = TestServer::start(ServerOptions::default(), move |conn| {
        let _ = tx.send(conn.request.clone());
        support::echo_handler(conn)
    })
    .await;
    (server, rx)
}

/// `ws://USERINFO@127.0.0.1:PORT/path`.
fn url_with(server: &TestServer, userinfo: &str) -> String {
    format!("ws://{userinfo}@{}/path", server.addr)
}

/// Opens `options`, returns the request the server saw, and closes.
async fn request_for(
    options: ConnectOptions,
    seen: &mut mpsc::UnboundedReceiver<Request>,
) -> Request {
    let task = bounded("the connection", connect_socket(options))
        .await
        .expect("connect");
    let request = bounded("the server's report", seen.recv())
        .await
        .expect("a request");
    bounded("the close", task.close(CloseOptions::default()))
        .await
        .expect("close");
    request
}

fn basic(pair: &[u8]) -> String {
    format!("Basic {}", STANDARD.encode(pair))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_user_info_is_sent_as_basic_authorization() {
    within(async {
        let (server, mut seen) = recording_server().await;
        let request = request_for(
            ConnectOptions::new(url_with(&server, "alice:open%20sesame%40home")),
            &mut seen,
        )
        .await;
        assert_eq!(
            request.header("authorization"),
            Some(basic(b"alice:open sesame@home").as_str()),
            "{request:?}"
        );
        assert_eq!(request.path, "/path");
        // Once: never two Authorization headers.
        let count = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .count();
        assert_eq!(count, 1, "{request:?}");
        // The Host header carries no user info.
        assert_eq!(
            request.header("host"),
            Some(server.addr.to_string().as_str())
        );

        // A user name alone (a token) is sent with an empty password.
        let request = request_for(ConnectOptions::new(url_with(&server, "t0ken")), &mut seen).await;
        assert_eq!(
            request.header("Authorization"),
            Some(basic(b"t0ken:").as_str())
        );

        // Without user info, no Authorization header.
        let request = request_for(ConnectOptions::new(server.url()), &mut seen).await;
        assert_eq!(request.header("authorization"), None, "{request:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_header_of_the_application_wins_over_the_url() {
    within(async {
        let (server, mut seen) = recording_server().await;
        for name in ["Authorization", "authorization", "AUTHORIZATION"] {
            let options = ConnectOptions::new(url_with(&server, "alice:pw"))
                .header(name, "Bearer from-the-application");
            let request = request_for(options, &mut seen).await;
            let values: Vec<&str> = request
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(values, ["Bearer from-the-application"], "{request:?}");
        }
    })
    .await;
}

#[test]
fn debug_of_connect_options_shows_no_secret() {
    let shown = format!(
        "{:?}",
        ConnectOptions::new("ws://u:pw@h/").header("Cookie", "c=secret")
    );
    assert!(!shown.contains("pw"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains(r#"url: "ws://u:***@h/""#), "{shown}");
    assert!(shown.contains(r#"("Cookie", "***")"#), "{shown}");

    let options = ConnectOptions::new("wss://t0ken-secret@example.com/")
        .header("authorization", "Bearer bearer-secret")
        .header("Proxy-Authorization", "Basic proxy-secret")
        .header("X-Trace", "visible")
        .proxy("http://user:proxy-pw-secret@proxy.internal:3128")
        .client_certificate("cert", "-----BEGIN PRIVATE KEY-----key-secret");
    let shown = format!("{options:?}");
    assert!(!shown.contains("secret"), "{shown}");
    for visible in [
        r#"url: "wss://***@example.com/""#,
        r#"("authorization", "Bearer ***")"#,
        r#"("Proxy-Authorization", "Basic ***")"#,
        r#"("X-Trace", "visible")"#,
        r#"Url("http://user:***@proxy.internal:3128")"#,
    ] {
        assert!(shown.contains(visible), "no {visible} in {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_url_errors_do_not_show_the_password() {
    within(async {
        for url in [
            "wss://u:s3cret-pw@example.com:notaport/",
            "http://u:s3cret-pw@example.com/",
            "ws://u:s3cret-pw@example.com/#fragment",
            "ws://s3cret-pw@/",
        ] {
            let failed = Arc::new(Mutex::new(Vec::new()));
            let events = Arc::new(Mutex::new(Vec::new()));
            let f = failed.clone();
            let task = connect_socket(
                ConnectOptions::new(url).fail(move |e| f.lock().unwrap().push(e.to_string())),
            );
            let e = events.clone();
            task.on_error(move |ev| e.lock().unwrap().push(ev.err_msg.clone()));
            let e = events.clone();
            task.on_close(move |ev| e.lock().unwrap().push(ev.reason.clone()));
            let err = task.await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}");
            assert!(err.err_msg().contains("invalid URL"), "{err}");
            wait_until("the close event", || events.lock().unwrap().len() == 2).await;
            let mut shown = vec![err.to_string(), format!("{err:?}")];
            shown.extend(failed.lock().unwrap().iter().cloned());
            shown.extend(events.lock().unwrap().iter().cloned());
            assert_eq!(shown.len(), 5, "{shown:?}");
            for s in &shown {
                assert!(!s.contains("s3cret"), "{url}: {s}");
            }
        }
        let err = connect_socket(ConnectOptions::new("http://u:s3cret-pw@example.com/"))
            .await
            .unwrap_err();
        assert_eq!(
            err.err_msg(),
            "connectSocket:fail invalid URL \"http://u:***@example.com/\": scheme must be ws or wss"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_proxy_url_errors_do_not_show_the_password() {
    within(async {
        for proxy in [
            "https://u:s3cret-pw@proxy.internal:3128",
            "ftp://u:s3cret-pw@proxy.internal",
            "http://u:s3cret-pw@proxy.internal:notaport",
        ] {
            let err = connect_socket(ConnectOptions::new("ws://example.com/").proxy(proxy))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{proxy}");
            assert!(err.err_msg().contains("u:***@proxy.internal"), "{err}");
            assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        }
    })
    .await;
}
