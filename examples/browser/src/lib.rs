//! A live chat page on unisocket in the browser: the same `connect_socket`,
//! `on_open`, `on_message` and `send` as a native program.
//!
//! The page's address picks the server: `?ws=ws://127.0.0.1:9001/` (the
//! default is the embedded echo server of `unisocket serve`). `?say=a|b|c`
//! types those lines on open, for a visitor that is a script (CI).

use unisocket::{connect_socket, ConnectOptions, Data, ReconnectPolicy, SocketTask};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Appends a line to the chat log (`<ul id="log">`), with a class for its
/// kind (`me`, `echo`, `event`).
fn show(kind: &str, line: &str) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let (Some(log), Ok(item)) = (document.get_element_by_id("log"), document.create_element("li"))
    else {
        return;
    };
    item.set_class_name(kind);
    item.set_text_content(Some(line));
    // A page that lost its log has nothing to show the line in.
    let _ = log.append_child(&item);
}

fn param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

fn say(task: &SocketTask, line: String) {
    show("me", &format!("you: {line}"));
    task.send(line);
}

#[wasm_bindgen(start)]
pub fn start() -> Result<(), JsValue> {
    let url = param("ws").unwrap_or_else(|| "ws://127.0.0.1:9001/".to_owned());
    show("event", &format!("connecting to {url}"));
    // Sends typed before the open wait for it; a dropped connection comes back.
    let task = connect_socket(
        ConnectOptions::new(url)
            .queue_until_open(true)
            .reconnect(ReconnectPolicy::default()),
    );
    let scripted: Vec<String> = param("say")
        .map(|s| s.split('|').map(str::to_owned).collect())
        .unwrap_or_default();
    let t = task.clone();
    task.on_open(move |ev| {
        show("event", &format!("open (protocol {:?})", ev.protocol));
        for line in &scripted {
            say(&t, line.clone());
        }
    });
    task.on_message(|ev| match &ev.data {
        Data::Text(text) => show("echo", &format!("echo: {text}")),
        Data::Binary(bytes) => show("echo", &format!("echo: {} bytes", bytes.len())),
    });
    task.on_error(|ev| show("event", &format!("error: {}", ev.error.err_msg())));
    task.on_reconnecting(|ev| show("event", &format!("reconnecting in {:?}", ev.delay)));
    task.on_close(|ev| show("event", &format!("closed: {} {}", ev.code, ev.reason)));

    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let form: web_sys::HtmlFormElement = document
        .get_element_by_id("form")
        .ok_or("no #form")?
        .dyn_into()?;
    let input: web_sys::HtmlInputElement = document
        .get_element_by_id("line")
        .ok_or("no #line")?
        .dyn_into()?;
    let on_submit = Closure::<dyn FnMut(web_sys::SubmitEvent)>::new(move |ev: web_sys::SubmitEvent| {
        ev.prevent_default();
        let line = input.value();
        if !line.is_empty() {
            say(&task, line);
            input.set_value("");
        }
    });
    form.set_onsubmit(Some(on_submit.as_ref().unchecked_ref()));
    // The handler lives as long as the page.
    on_submit.forget();
    Ok(())
}
