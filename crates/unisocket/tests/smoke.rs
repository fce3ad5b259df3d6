//! The shortest round trip: connect to the test echo server, send text and
//! binary, receive both back, close cleanly.

mod support;

use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, ReadyState};

#[tokio::test]
async fn echo_round_trip() {
    let server = support::TestServer::echo().await;
    let task = connect_socket(ConnectOptions::new(server.url()))
        .await
        .unwrap();
    assert_eq!(task.ready_state(), ReadyState::Open);
    task.send("hello").await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from("hello")));
    task.send(vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from(vec![1u8, 2, 3])));
    task.close(CloseOptions::default()).await.unwrap();
    assert_eq!(task.ready_state(), ReadyState::Closed);
    assert_eq!(task.recv().await, None);
}
