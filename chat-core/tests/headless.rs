//! Headless mode: two nodes befriend and chat only through the line
//! protocol (commands in, JSON lines out), in one process.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};
use tokio::task::JoinHandle;

/// One node run by `chat_core::headless::run` over in-memory pipes.
struct Script {
    input: DuplexStream,
    output: Lines<BufReader<DuplexStream>>,
    task: JoinHandle<std::io::Result<()>>,
    node: chat_core::Node,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl Script {
    async fn start(root: &std::path::Path, name: &str) -> Self {
        let peer = common::start(root, name).await;
        let (input, their_input) = tokio::io::duplex(64 * 1024);
        let (their_output, output) = tokio::io::duplex(64 * 1024);
        let node = peer.node.clone();
        let task = tokio::spawn(chat_core::headless::run(
            peer.node,
            peer.events,
            BufReader::new(their_input),
            their_output,
        ));
        Self {
            input,
            output: BufReader::new(output).lines(),
            task,
            node,
            seen: Vec::new(),
        }
    }

    async fn say(&mut self, line: &str) {
        self.input
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next output line containing every one of `parts`.
    async fn expect(&mut self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = match tokio::time::timeout_at(deadline, self.output.next_line()).await {
                Ok(Ok(Some(line))) => line,
                other => panic!(
                    "no line with {parts:?} ({other:?}); saw:\n{}",
                    self.seen.join("\n")
                ),
            };
            assert!(line.starts_with("{\"event\":\""), "{line}");
            self.seen.push(line.clone());
            if parts.iter().all(|p| line.contains(p)) {
                return line;
            }
        }
    }
}

/// The string value of `"key":"…"` in a line (no escapes in ids and codes).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("\"{key}\":\"")).unwrap() + key.len() + 4;
    let len = line[start..].find('"').unwrap();
    &line[start..start + len]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_chat_through_the_line_protocol() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Script::start(root.path(), "alice").await;
    let mut bob = Script::start(root.path(), "bob").await;

    alice.say("invite").await;
    let line = alice.expect(&["\"event\":\"invite\""]).await;
    let code = field(&line, "code").to_owned();
    let alice_id = field(&line, "id").to_owned();
    assert!(code.starts_with("crust:"), "{line}");

    bob.say(&format!("add {code} hi, it's bob")).await;
    bob.expect(&["\"event\":\"added\"", &alice_id]).await;
    let line = alice
        .expect(&["\"event\":\"request\"", "\"message\":\"hi, it's bob\""])
        .await;
    let bob_id = field(&line, "from").to_owned();

    // Contacts by name or by id prefix.
    alice.say(&format!("accept {}", &bob_id[..8])).await;
    alice
        .expect(&["\"event\":\"ok\"", "\"command\":\"accept\""])
        .await;
    bob.expect(&["\"event\":\"accepted\"", &alice_id]).await;

    bob.say("send alice hello \"alice\"\tfrom a script").await;
    let queued = bob.expect(&["\"event\":\"queued\""]).await;
    let id = field(&queued, "id").to_owned();
    let got = alice.expect(&["\"event\":\"message\"", &id]).await;
    assert!(
        got.contains(r#""text":"hello \"alice\"\tfrom a script""#),
        "{got}"
    );
    bob.expect(&["\"event\":\"state\"", &id, "\"state\":\"delivered\""])
        .await;

    alice.say("read bob").await;
    alice.expect(&["\"command\":\"read\"", "\"count\":1"]).await;
    bob.expect(&["\"event\":\"state\"", &id, "\"state\":\"read\""])
        .await;

    alice.say(&format!("send {bob_id} hi bob")).await;
    bob.expect(&["\"event\":\"message\"", "\"text\":\"hi bob\""])
        .await;

    alice.say("contacts").await;
    let contacts = alice.expect(&["\"event\":\"contacts\""]).await;
    assert!(contacts.contains("\"name\":\"bob\""), "{contacts}");
    assert!(contacts.contains("\"state\":\"friend\""), "{contacts}");
    assert!(contacts.contains("\"online\":true"), "{contacts}");
    assert!(contacts.contains("\"connecting\":false"), "{contacts}");
    assert!(contacts.contains("\"path\":\"direct "), "{contacts}");

    alice.say("history bob").await;
    let history = alice.expect(&["\"event\":\"history\""]).await;
    let first = history.find("from a script").unwrap();
    let second = history.find("hi bob").unwrap();
    assert!(first < second, "{history}");

    alice.say("search script").await;
    let found = alice.expect(&["\"event\":\"search\""]).await;
    assert!(
        found.contains("from a script") && !found.contains("hi bob"),
        "{found}"
    );

    // Mistakes are answered and the session goes on.
    alice.say("send nobody hello").await;
    alice
        .expect(&["\"event\":\"error\"", "\"command\":\"send\"", "no contact"])
        .await;
    alice.say("add crust:aaaa").await;
    alice
        .expect(&["\"event\":\"error\"", "\"command\":\"add\"", "checksum"])
        .await;
    alice.say("frobnicate").await;
    alice
        .expect(&["\"event\":\"error\"", "unknown command"])
        .await;
    alice.say(&format!("send bob {}", "x".repeat(70_000))).await;
    alice.expect(&["\"event\":\"error\"", "longer than"]).await;
    alice.say("# a comment, then an empty line").await;
    alice.say("").await;
    alice.say("safety bob").await;
    let safety = alice.expect(&["\"event\":\"safety\""]).await;
    assert_eq!(
        field(&safety, "code"),
        alice.node.safety_code(&bob_id.parse().unwrap())
    );

    alice.say("quit").await;
    alice.expect(&["\"event\":\"bye\""]).await;
    alice.task.await.unwrap().unwrap();
    // The end of the input ends the session too.
    drop(bob.input);
    bob.task.await.unwrap().unwrap();
    alice.node.shutdown().await;
    bob.node.shutdown().await;
}
