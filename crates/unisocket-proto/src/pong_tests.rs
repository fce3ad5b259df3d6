//! Automatic pongs under a ping flood: a ping gets a pong of its own while
//! fewer than [`WAITING_PONGS`] wait unsent in the write buffer; past that,
//! the last one answers the latest ping (RFC 6455 section 5.5.3). Checked
//! against the in-memory server codec of `test_server.rs`.

use std::time::Instant;

use super::connection::{MAX_PONG, WAITING_PONGS};
use super::test_server::{server_ping, server_text, Message, ServerCodec};
use super::{Config, Connection, Event};

/// The payload of the `i`-th ping of a flood: 0 to 125 bytes, different
/// from its neighbours in length and content.
fn payload(i: usize) -> Vec<u8> {
    (0..i % 126).map(|k| (i * 7 + k) as u8).collect()
}

/// Feeds `bytes` to the client and polls every event out; returns the
/// payloads of the pings it reported.
fn deliver(client: &mut Connection, bytes: &[u8]) -> Vec<Vec<u8>> {
    client.read_buf().extend_from_slice(bytes);
    let mut pings = Vec::new();
    while let Some(event) = client.poll_event().unwrap() {
        match event {
            Event::Ping(p) => pings.push(p.to_vec()),
            other => panic!("unexpected event {other:?}"),
        }
    }
    pings
}

/// Delivers `WAITING_PONGS - 1` pings whose pongs stay waiting, so that
/// the next ping's pong is the last with a place of its own; returns those
/// pongs, as the server will see them.
fn fill(client: &mut Connection) -> Vec<Message> {
    (0..WAITING_PONGS - 1)
        .map(|i| {
            let p = format!("w{i}").into_bytes();
            assert_eq!(deliver(client, &server_ping(&p)), std::slice::from_ref(&p));
            Message::Pong(p)
        })
        .collect()
}

/// `first`, then `rest`.
fn then(mut first: Vec<Message>, rest: Vec<Message>) -> Vec<Message> {
    first.extend(rest);
    first
}

/// Moves whatever the client wrote into a server codec and returns the
/// messages it decodes (the codec checks masking and framing).
fn written(client: &mut Connection) -> Vec<Message> {
    let mut server = ServerCodec::new();
    server.feed(&client.write_buf().split());
    let mut out = Vec::new();
    while let Some(m) = server.next_message().unwrap() {
        out.push(m);
    }
    assert_eq!(server.buffered(), 0, "partial frame left from the client");
    out
}

#[test]
fn a_ping_flood_that_is_never_written_out_leaves_bounded_pongs_the_last_with_the_latest_payload() {
    const PINGS: usize = 100_000;
    let mut client = Connection::new(Config::default());
    let flood: Vec<u8> = (0..PINGS).flat_map(|i| server_ping(&payload(i))).collect();
    let (mut reported, mut largest, mut largest_room) = (0, 0, 0);
    // In reads of 4 KiB, as a transport would bring them; the write buffer
    // is looked at (not drained) after each.
    for piece in flood.chunks(4096) {
        for p in deliver(&mut client, piece) {
            assert_eq!(p, payload(reported));
            reported += 1;
        }
        let write = client.write_buf();
        largest = largest.max(write.len());
        largest_room = largest_room.max(write.capacity());
    }
    assert_eq!(reported, PINGS);
    // `WAITING_PONGS` pong frames at most, and no allocation beyond that.
    let bound = WAITING_PONGS * MAX_PONG;
    assert!(largest <= bound, "write buffer reached {largest} bytes");
    assert!(
        largest_room <= 2 * bound,
        "write buffer grew to {largest_room} bytes"
    );
    // The first pings answered each, the last pong with the latest payload.
    let mut want: Vec<_> = (0..WAITING_PONGS - 1)
        .map(|i| Message::Pong(payload(i)))
        .collect();
    want.push(Message::Pong(payload(PINGS - 1)));
    assert_eq!(written(&mut client), want);
    // Nothing else was waiting.
    assert!(client.write_buf().is_empty());
}

#[test]
fn one_ping_at_a_time_written_out_in_between_gets_a_pong_each() {
    let mut client = Connection::new(Config::default());
    for i in 0..300 {
        assert_eq!(
            deliver(&mut client, &server_ping(&payload(i))),
            [payload(i)]
        );
        assert_eq!(written(&mut client), vec![Message::Pong(payload(i))]);
    }
}

#[test]
fn a_pong_behind_which_a_message_was_queued_is_replaced_in_place_or_followed_once() {
    let mut client = Connection::new(Config::default());
    let waiting = fill(&mut client);
    deliver(&mut client, &server_ping(b"aa"));
    client.send_text("x").unwrap();
    let len = client.write_buf().len();
    // Same length: written over the waiting pong; the message stays where it is.
    deliver(&mut client, &server_ping(b"bb"));
    assert_eq!(client.write_buf().len(), len);
    // Other lengths: the newest waits for the old pong to leave.
    deliver(&mut client, &server_ping(b"ccc"));
    deliver(&mut client, &server_ping(b"d"));
    assert_eq!(client.write_buf().len(), len);
    assert_eq!(
        written(&mut client),
        then(
            waiting,
            vec![Message::Pong(b"bb".to_vec()), Message::Text("x".into())]
        )
    );
    // Once the old pong was taken, the newest payload gets its pong.
    assert_eq!(written(&mut client), vec![Message::Pong(b"d".to_vec())]);
    assert_eq!(written(&mut client), vec![]);
}

#[test]
fn a_waiting_pong_goes_out_before_the_next_message() {
    let mut client = Connection::new(Config::default());
    let waiting = fill(&mut client);
    deliver(&mut client, &server_ping(b"aa"));
    client.send_binary(b"1").unwrap();
    deliver(&mut client, &server_ping(b"later"));
    assert_eq!(
        written(&mut client),
        then(
            waiting,
            vec![
                Message::Pong(b"aa".to_vec()),
                Message::Binary(b"1".to_vec())
            ]
        )
    );
    // The message queued next finds the newer pong before it.
    client.send_binary(b"2").unwrap();
    assert_eq!(
        written(&mut client),
        vec![
            Message::Pong(b"later".to_vec()),
            Message::Binary(b"2".to_vec())
        ]
    );
}

#[test]
fn a_pong_partly_taken_is_on_its_way_and_the_next_ping_gets_its_own() {
    let mut client = Connection::new(Config::default());
    let mut server = ServerCodec::new();
    let waiting = fill(&mut client);
    deliver(&mut client, &server_ping(b"first"));
    // The transport took 3 bytes of the oldest pong: it is on its way, and
    // one more ping ("second") has a pong of its own; the next ("third")
    // takes the place of that one, the last, still waiting whole.
    server.feed(&client.write_buf().split_to(3));
    deliver(&mut client, &server_ping(b"second"));
    deliver(&mut client, &server_ping(b"third"));
    server.feed(&client.write_buf().split());
    let mut got = Vec::new();
    while let Some(m) = server.next_message().unwrap() {
        got.push(m);
    }
    assert_eq!(
        got,
        then(
            waiting,
            vec![
                Message::Pong(b"first".to_vec()),
                Message::Pong(b"third".to_vec())
            ]
        )
    );
}

#[test]
fn pings_between_messages_of_a_flood_keep_the_message_order() {
    let mut client = Connection::new(Config::default());
    let mut stream = Vec::new();
    for i in 0..50 {
        stream.extend_from_slice(&server_ping(&payload(i)));
        stream.extend_from_slice(&server_text(&format!("m{i}")));
    }
    client.read_buf().extend_from_slice(&stream);
    let mut texts = 0;
    while let Some(event) = client.poll_event().unwrap() {
        if let Event::Message(data) = event {
            assert_eq!(data.as_bytes(), format!("m{texts}").as_bytes());
            texts += 1;
            // The application answers each message.
            client.send(&data).unwrap();
        }
        assert!(client.write_buf().len() < 50 * 12 + WAITING_PONGS * MAX_PONG);
    }
    assert_eq!(texts, 50);
    let out = written(&mut client);
    // Every answer, in order; a pong comes before the first one.
    let answers: Vec<_> = out
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(out[0], Message::Pong(payload(0)));
    let pongs = out.len() - answers.len();
    assert!((1..=50).contains(&pongs), "{pongs} pongs");
    // The newest ping is answered, after the pong it waited behind.
    assert_eq!(written(&mut client), vec![Message::Pong(payload(49))]);
}

#[test]
fn no_pong_follows_a_close_frame() {
    let mut client = Connection::new(Config::default());
    let waiting = fill(&mut client);
    deliver(&mut client, &server_ping(b"aa"));
    client.send_text("bye").unwrap();
    deliver(&mut client, &server_ping(b"longer"));
    client.close(1000, "", Instant::now()).unwrap();
    assert_eq!(
        written(&mut client),
        then(
            waiting,
            vec![
                Message::Pong(b"aa".to_vec()),
                Message::Text("bye".into()),
                Message::Close(Some(1000), String::new())
            ]
        )
    );
    assert_eq!(written(&mut client), vec![]);
}
