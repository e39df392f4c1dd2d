//! The market end to end: real peers (separate homes, each with its own
//! Docker jobs, mock upstream and policies) on a real NATS server with
//! JetStream, started by the test on a loopback port.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker_support::{JobHome, KEY};
use crate::nats::{NatsCluster, NatsServer, files_containing};
use crate::support::{Home, Run};

const PROMPT: &str = "Market prompt: name three prime numbers, 7919 among them";

/// A node of the test market: its home and its node id.
pub(crate) struct Peer {
    pub(crate) home: Home,
    pub(crate) id: String,
}

impl Peer {
    fn join(home: Home, url: &str, issuer: &str) -> Peer {
        // A market job is held to its requester's own approval: the tests'
        // requesters approve theirs with --approve-all.
        home.set(&[
            &format!("market.url={url}"),
            &format!("market.issuerKeys={issuer}"),
            "market.claimWaitSecs=20",
            "market.offerTtlSecs=6",
            "compliance.allowAutoApprove=true",
        ]);
        let id = node_id(&home);
        Peer { home, id }
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let (code, doc) = self.home.json(args);
        assert_eq!(code, 0, "{args:?}: {doc:#}");
        doc
    }
}

/// A node that issues the market's RUV, trusting only itself as issuer.
fn issuer_on(url: &str) -> Peer {
    let home = Home::new();
    let id = node_id(&home);
    Peer::join(home, url, &id)
}

pub(crate) fn node_id(home: &Home) -> String {
    let (code, doc) = home.json(&["keys", "show"]);
    assert_eq!(code, 0, "{doc:#}");
    doc["current"]["node_id"].as_str().unwrap().to_owned()
}

/// `serve` in the background with the owner's key, as a provider runs it.
pub(crate) fn serve(env: &JobHome, args: &[&str]) -> Child {
    let mut cmd = env.home.command();
    cmd.env("ANTHROPIC_API_KEY", KEY)
        .args(["--json", "serve", "--approve-all"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("starting serve")
}

/// Stops `serve` as an init system would, and returns what it printed.
pub(crate) fn stop(mut child: Child) -> Run {
    // SAFETY: kill(2) on a child we started and have not reaped.
    let sent = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("polling serve").is_none() {
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("serve's output").into()
}

pub(crate) fn wait_for_offers(peer: &Peer, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let offers = peer.json(&["market", "offers"]);
        if offers.as_array().map_or(0, Vec::len) >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} offers did not appear: {offers:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `execute --market --approve-all` of [`PROMPT`] at 1000 tokens, then
/// `args`.
fn market_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "execute",
        "--market",
        "--approve-all",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "1000",
    ];
    all.extend_from_slice(args);
    all
}

pub(crate) fn market_execute(peer: &Peer, args: &[&str]) -> (i32, Value) {
    peer.home.json(&market_args(args))
}

/// [`market_execute`] left running, its output piped (`--json` among
/// `args` for one document at the end).
fn market_execute_in_background(peer: &Peer, args: &[&str]) -> Child {
    let mut cmd = peer.home.command();
    cmd.args(market_args(args))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("starting execute --market")
}

/// A requester that is its own issuer, with `amount` RUV granted, and
/// `settings` applied before the grant.
pub(crate) fn funded_requester(url: &str, amount: u64, settings: &[&str]) -> Peer {
    let home = Home::opted_in();
    let issuer = node_id(&home);
    let requester = Peer::join(home, url, &issuer);
    if !settings.is_empty() {
        requester.home.set(settings);
    }
    let amount = amount.to_string();
    requester.json(&[
        "market",
        "grant",
        "--to",
        &requester.id,
        "--amount",
        &amount,
    ]);
    requester
}

/// A provider's home on the market at `url`, trusting `issuer`'s grants,
/// with `settings` on top.
pub(crate) fn provider_home(url: &str, issuer: &str, settings: &[&str]) -> JobHome {
    let env = JobHome::new();
    let (url, issuer) = (
        format!("market.url={url}"),
        format!("market.issuerKeys={issuer}"),
    );
    let mut all = vec![url.as_str(), issuer.as_str(), "market.offerTtlSecs=6"];
    all.extend_from_slice(settings);
    env.home.set(&all);
    env
}

#[test]
fn tasks_go_to_the_provider_that_fits_and_every_node_agrees_on_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();

    let issuer = issuer_on(&url);

    // A serves both models at the higher price; B is cheaper but its own policy
    // refuses sonnet, whatever its offer says.
    let a_env = provider_home(&url, &issuer.id, &[]);
    let b_env = provider_home(
        &url,
        &issuer.id,
        &["compliance.allowedModels=claude-haiku-4-5"],
    );
    let requester = Peer::join(Home::opted_in(), &url, &issuer.id);
    let a_id = node_id(&a_env.home);
    let b_id = node_id(&b_env.home);
    let models = "--models=claude-sonnet-4-5,claude-haiku-4-5";
    let a = serve(&a_env, &["--price", "14", models]);
    let b = serve(&b_env, &["--price", "10", models]);

    let granted = issuer.json(&["market", "grant", "--to", &requester.id, "--amount", "100"]);
    assert_eq!(granted["issuer_trusted_here"], true);
    wait_for_offers(&requester, 2);

    // Sonnet: both are candidates, B's approval refuses, A claims.
    let (code, sonnet) = market_execute(&requester, &["--model", "claude-sonnet-4-5"]);
    assert_eq!(code, 0, "{sonnet:#}");
    assert_eq!(sonnet["outcome"], "completed");
    assert_eq!(sonnet["provider"], a_id.as_str());
    assert!(
        !sonnet["output"].as_str().unwrap().is_empty(),
        "the result came back: {sonnet:#}"
    );
    let sonnet_price = sonnet["price"].as_u64().unwrap();

    // Haiku under a cap of 12: only B's offer fits.
    let (code, haiku) = market_execute(
        &requester,
        &["--model", "claude-haiku-4-5", "--max-price", "12"],
    );
    assert_eq!(code, 0, "{haiku:#}");
    assert_eq!(haiku["provider"], b_id.as_str());
    let haiku_price = haiku["price"].as_u64().unwrap();

    // Every node replays the same ledger to the same balances.
    let peers = [
        &requester,
        &issuer,
        &Peer {
            home: a_env.home,
            id: a_id.clone(),
        },
        &Peer {
            home: b_env.home,
            id: b_id.clone(),
        },
    ];
    let ledgers: Vec<Value> = peers
        .iter()
        .map(|p| p.json(&["market", "ledger"])["accounts"].clone())
        .collect();
    for other in &ledgers[1..] {
        assert_eq!(other, &ledgers[0]);
    }
    let accounts = &ledgers[0];
    assert_eq!(
        accounts[&requester.id]["available"],
        100 - sonnet_price - haiku_price
    );
    assert_eq!(accounts[&a_id]["earned"], sonnet_price);
    assert_eq!(accounts[&b_id]["earned"], haiku_price);
    let stats: Vec<Value> = peers
        .iter()
        .map(|p| p.json(&["market", "stats"])["reputations"].clone())
        .collect();
    for other in &stats[1..] {
        assert_eq!(other, &stats[0]);
    }
    assert_eq!(stats[0][&a_id]["completed"], 1);
    assert!(stats[0][&a_id]["as_provider"].as_f64().unwrap() > 0.5);

    // Only ciphertext reached the server's store.
    let store = server.store_dir();
    let task = sonnet["task"].as_str().unwrap();
    assert!(
        !files_containing(&store, format!("cmm.task.{task}").as_bytes()).is_empty(),
        "the task's subject is in the store, so the search would find text"
    );
    assert_eq!(
        files_containing(&store, PROMPT.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    let output = sonnet["output"].as_str().unwrap().trim();
    assert_eq!(
        files_containing(&store, output.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );

    // The requester can read its result again; the result belongs to it.
    let result = requester.json(&["market", "result", task]);
    assert_eq!(result["output"].as_str().unwrap().trim(), output);

    for child in [a, b] {
        let run = stop(child);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("\"event\":\"stopping\""),
            "{}",
            run.stdout
        );
    }
    let offers = requester.json(&["market", "offers"]);
    assert_eq!(
        offers,
        serde_json::json!([]),
        "stopping withdraws the offers"
    );
}

/// A direct connection to the market, as a peer that does not follow the
/// protocol would have, and a runtime to drive it.
pub(crate) fn raw_market(
    url: &str,
) -> (
    tokio::runtime::Runtime,
    claude_max_market::market::Transport,
) {
    use claude_max_market::market::{Connection, Transport};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conn = Connection {
        urls: vec![url.to_owned()],
        replicas: 1,
        offer_ttl: Duration::from_secs(6),
        ..Connection::default()
    };
    let transport = rt.block_on(Transport::connect(&conn)).unwrap();
    (rt, transport)
}

#[test]
fn forged_unsigned_and_replayed_ledger_entries_are_refused_and_counted() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use claude_max_market::crypto::NodeKey;
    use claude_max_market::market::message::seal;
    use claude_max_market::market::transport::LEDGER_STREAM;
    use claude_max_market::market::types::{Body, Grant};

    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let issuer = issuer_on(&url);
    let receiver = Peer::join(Home::new(), &url, &issuer.id);

    let granted = issuer.json(&["market", "grant", "--to", &receiver.id, "--amount", "50"]);
    let grant_id = granted["grant"].as_str().unwrap().to_owned();
    let genuine = issuer.json(&["market", "ledger"])["lines"][0].clone();
    assert_eq!(genuine["effect"], "applied", "{genuine:#}");

    let mallory = NodeKey::generate(2048).unwrap();
    let grant = |id: &str, amount| {
        Body::Grant(Grant {
            grant: id.into(),
            to: receiver.id.clone(),
            amount,
            memo: String::new(),
        })
    };
    // Signed by a key nobody trusts as an issuer.
    let (forged, _) = seal(&mallory, grant("forged", 1000)).unwrap();
    let (rt, raw) = raw_market(&url);
    let publish = |subject: &str, bytes: Vec<u8>| {
        rt.block_on(raw.publish(subject, subject, bytes)).unwrap();
    };
    publish("cmm.ledger.grant.forged", forged.clone());
    // A trusted-looking grant with its signature stripped.
    let mut unsigned: Value = serde_json::from_slice(&forged).unwrap();
    unsigned.as_object_mut().unwrap().remove("sig");
    publish(
        "cmm.ledger.grant.unsigned",
        serde_json::to_vec(&unsigned).unwrap(),
    );
    // A signed body edited after signing.
    let mut edited: Value = serde_json::from_slice(&forged).unwrap();
    let payload = B64.decode(edited["signed"].as_str().unwrap()).unwrap();
    let payload = String::from_utf8(payload).unwrap().replace("1000", "9999");
    edited["signed"] = Value::from(B64.encode(payload));
    publish(
        "cmm.ledger.grant.edited",
        serde_json::to_vec(&edited).unwrap(),
    );
    // The issuer's genuine grant, byte for byte, a second time.
    let genuine_bytes = rt
        .block_on(raw.read(LEDGER_STREAM, &format!("cmm.ledger.grant.{grant_id}"), 1))
        .unwrap()
        .remove(0)
        .bytes
        .to_vec();
    publish("cmm.ledger.grant.again", genuine_bytes);

    for peer in [&issuer, &receiver] {
        let ledger = peer.json(&["market", "ledger"]);
        let effects: Vec<String> = ledger["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| match l["detail"].as_str() {
                Some(detail) => format!("{}:{detail}", l["effect"].as_str().unwrap()),
                None => l["effect"].as_str().unwrap().to_owned(),
            })
            .collect();
        assert_eq!(
            effects,
            [
                "applied",
                "dropped:not-authorised",
                "dropped:unsigned",
                "dropped:bad-signature",
                "dropped:replayed",
            ],
            "{ledger:#}"
        );
        assert_eq!(ledger["accounts"][&receiver.id]["available"], 50);
        let stats = peer.json(&["market", "stats"]);
        assert_eq!(
            stats["ledger_dropped"],
            serde_json::json!({"bad-signature": 1, "not-authorised": 1, "replayed": 1, "unsigned": 1})
        );
    }
}

#[test]
fn a_provider_killed_mid_task_is_refunded_after_the_timeout_and_never_paid() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 40, &[]);
    let issuer = requester.id.clone();

    let provider = provider_home(&url, &issuer, &[]);
    // Slow enough that the job is still streaming when the provider dies.
    provider.mock.set_delta_delay(Duration::from_millis(400));
    let provider_id = node_id(&provider.home);
    let serving = serve(&provider, &["--price", "12"]);
    wait_for_offers(&requester, 1);

    let asking = market_execute_in_background(&requester, &["--json", "--timeout", "8"]);
    let (container, _) = provider.wait_for_container();

    let mut serving = serving;
    serving.kill().expect("killing serve");
    serving.wait().expect("reaping serve");

    let run: Run = asking.wait_with_output().expect("execute's output").into();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["outcome"], "timed-out", "{doc:#}");
    assert_eq!(doc["provider"], provider_id.as_str());

    let ledger = requester.json(&["market", "ledger"]);
    let accounts = &ledger["accounts"];
    assert_eq!(accounts[&requester.id]["available"], 40, "{ledger:#}");
    assert_eq!(accounts[&requester.id]["locked"], 0);
    assert!(accounts[&provider_id]["earned"].as_u64().unwrap_or(0) == 0);
    let kinds: Vec<&str> = ledger["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["grant", "lock", "refund"]);
    let stats = requester.json(&["market", "stats"]);
    assert_eq!(stats["reputations"][&provider_id]["timed_out"], 1);
    assert!(
        stats["reputations"][&provider_id]["as_provider"]
            .as_f64()
            .unwrap()
            < 0.5
    );

    // The provider's restart ends what the dead one left: its container
    // is removed and its job aborted before it serves again.
    let restarted = serve(&provider, &["--price", "12"]);
    wait_for_offers(&requester, 1);
    assert!(!crate::docker_support::exists(&container));
    let job = provider.newest_job();
    assert_eq!(job["state"], "aborted", "{job:#}");
    assert_eq!(stop(restarted).code, 0);
}

#[test]
fn a_cluster_loses_a_server_mid_run_and_no_task_is_lost_or_run_twice() {
    const TASKS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path(), 3);
    let urls = cluster.url_list();

    // Failover takes the stream's new leader and every client's consumer
    // some seconds to settle, more on a loaded machine: a task posted just
    // after may wait that long for its claim.
    let settings = ["market.replicas=3", "market.claimWaitSecs=90"];
    let requester = funded_requester(&urls, 500, &settings);
    let issuer = requester.id.clone();

    let providers: Vec<JobHome> = (0..2)
        .map(|_| provider_home(&urls, &issuer, &settings))
        .collect();
    let serving: Vec<Child> = providers
        .iter()
        .map(|p| serve(p, &["--price", "10"]))
        .collect();
    wait_for_offers(&requester, 2);

    let mut spent = 0;
    for i in 0..TASKS {
        if i == 2 {
            // The first server in everyone's list: most clients are on it.
            cluster.kill(0);
        }
        let (code, doc) = market_execute(&requester, &["--model", "claude-haiku-4-5"]);
        assert_eq!(code, 0, "task {i}: {doc:#}");
        assert_eq!(doc["outcome"], "completed", "task {i}: {doc:#}");
        spent += doc["price"].as_u64().unwrap();
    }

    let mut peers = vec![Peer {
        home: requester.home,
        id: requester.id.clone(),
    }];
    for child in serving {
        let run = stop(child);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    }
    let mut results = 0;
    for p in providers {
        results += p.home.audit_of("market.result").len();
        let id = node_id(&p.home);
        peers.push(Peer { home: p.home, id });
    }
    assert_eq!(results, TASKS, "each task ran exactly once");

    let ledgers: Vec<Value> = peers
        .iter()
        .map(|p| p.json(&["market", "ledger"]))
        .collect();
    for other in &ledgers[1..] {
        assert_eq!(other["accounts"], ledgers[0]["accounts"]);
    }
    let accounts = &ledgers[0]["accounts"];
    assert_eq!(accounts[&requester.id]["available"], 500 - spent);
    let earned: u64 = peers[1..]
        .iter()
        .map(|p| accounts[&p.id]["earned"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(earned, spent);
    let locks = ledgers[0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "lock" && l["effect"] == "applied")
        .count();
    assert_eq!(locks, TASKS);
}

/// `serve`'s JSON events as they come, read on a thread of their own.
pub(crate) struct Events {
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Events {
    pub(crate) fn of(child: &mut Child) -> Events {
        use std::io::BufRead as _;
        let stdout = child.stdout.take().expect("serve's stdout is piped");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if send.send(event).is_err() {
                    return;
                }
            }
        });
        Events { lines }
    }

    /// The next event named `name`, failing after 60 s or on one named in
    /// `unexpected`.
    pub(crate) fn next(&self, name: &str, unexpected: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {name} event within 60 s"));
            let got = event["event"].as_str().unwrap_or_default();
            assert!(!unexpected.contains(&got), "{event:#}");
            if got == name {
                return event;
            }
        }
    }
}

#[test]
fn a_task_passed_over_at_its_bid_is_taken_when_the_bid_rises() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use claude_max_market::crypto::{NodeKey, PublicKey};
    use claude_max_market::market::message::seal;
    use claude_max_market::market::types::{Bid, Body, TaskResult};
    use sha2::{Digest, Sha256};

    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    // Offers refreshed every 20 s (and kept 60 s): the rates change below
    // between two refreshes, so the requester still sees the old price.
    let slow_refresh = "market.offerTtlSecs=60";
    let requester = funded_requester(&url, 100, &[slow_refresh]);
    let issuer = requester.id.clone();

    // A task of --max-tokens 1000 asks for a budget of its output and its
    // prompt's input, under 2000.
    let provider = provider_home(
        &url,
        &issuer,
        &["limits.maxTokensPerTask=2000", slow_refresh],
    );
    let provider_id = node_id(&provider.home);
    // No --price: the offer is pricing's quote, (10 + 2 × 2) × 1.25 rounded up.
    let mut serving = serve(&provider, &[]);
    let events = Events::of(&mut serving);
    assert_eq!(events.next("serving", &[])["price"], 18);
    wait_for_offers(&requester, 1);

    // The owner raises the rates while serving: the next task is judged
    // under the new ones, (40 + 2 × 2) × 1.25, above the bid.
    provider.home.set(&["market.basePrice=40"]);
    let asking = market_execute_in_background(&requester, &["--json", "--max-price", "18"]);

    let skipped = events.next("skipped", &["claimed"]);
    let task = skipped["task"].as_str().unwrap().to_owned();
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("asking price of 55"),
        "{skipped:#}"
    );
    // A raise signed by anyone but the requester is refused and counted.
    let (rt, raw) = raw_market(&url);
    let mallory = NodeKey::generate(2048).unwrap();
    let (forged, _) = seal(
        &mallory,
        Body::Bid(Bid {
            task: task.clone(),
            bid: 99,
        }),
    )
    .unwrap();
    let subject = format!("cmm.bid.{task}");
    rt.block_on(raw.publish(&subject, &subject, forged))
        .unwrap();
    // So is a result signed by anyone but the claimed provider, though it is
    // sealed to the requester and comes first on the task's result subject.
    let pem = requester.home.path().join("requester.pem");
    requester
        .home
        .ok(&["keys", "export-public", "--out", pem.to_str().unwrap()]);
    let to = PublicKey::from_pem(&std::fs::read_to_string(&pem).unwrap()).unwrap();
    let forgery = b"a result nobody ran";
    let mut sealed = Vec::new();
    claude_max_market::crypto::encrypt(&forgery[..], &mut sealed, &[to], 1 << 16).unwrap();
    let (forged, _) = seal(
        &mallory,
        Body::Result(TaskResult {
            task: task.clone(),
            state: "finished".into(),
            sha256: hex::encode(Sha256::digest(forgery)),
            payload: B64.encode(&sealed),
            input_tokens: 1,
            output_tokens: 1,
            exit_code: None,
            workspace: None,
        }),
    )
    .unwrap();
    let subject = format!("cmm.result.{task}");
    rt.block_on(raw.publish(&subject, &subject, forged))
        .unwrap();
    let placed = requester.json(&["bid", "--task-id", &task, "--max-price", "60"]);
    assert_eq!(placed["previous"], 18);
    assert_eq!(events.next("bid-raised", &["claimed"])["bid"], 60);
    let claimed = events.next("claimed", &[]);
    assert_eq!(claimed["task"], task.as_str());
    assert_eq!(claimed["price"], 55);

    let run: Run = asking.wait_with_output().expect("execute's output").into();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["outcome"], "completed", "{doc:#}");
    assert_eq!(doc["provider"], provider_id.as_str());
    assert_eq!(doc["price"], 55);
    let accounts = &requester.json(&["market", "ledger"])["accounts"];
    assert_eq!(accounts[&requester.id]["available"], 100 - 55);
    assert_eq!(accounts[&provider_id]["earned"], 55);
    let shown = requester.json(&["market", "result", &task]);
    assert_eq!(shown["provider"], provider_id.as_str(), "{shown:#}");
    assert_eq!(
        shown["output"].as_str().map(str::trim),
        doc["output"].as_str().map(str::trim),
        "{shown:#}"
    );

    assert_eq!(stop(serving).code, 0);
    let stats = provider.home.json(&["market", "stats"]).1;
    assert_eq!(
        stats["dropped_here"],
        serde_json::json!({"not-authorised": 1}),
        "{stats:#}"
    );
}

#[test]
fn forged_unsigned_and_replayed_live_messages_are_refused_and_counted() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use claude_max_market::crypto::NodeKey;
    use claude_max_market::market::message::seal;
    use claude_max_market::market::transport::{Start, TASKS_STREAM};
    use claude_max_market::market::types::{Body, Claim, Task};
    use futures_util::StreamExt as _;

    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &[]);
    let issuer = requester.id.clone();
    let provider = provider_home(&url, &issuer, &[]);
    let provider_id = node_id(&provider.home);
    let mut serving = serve(&provider, &["--price", "10"]);
    let events = Events::of(&mut serving);
    wait_for_offers(&requester, 1);

    // One genuine task, run to the end.
    let (code, genuine) = market_execute(&requester, &[]);
    assert_eq!(code, 0, "{genuine:#}");
    let genuine_task = genuine["task"].as_str().unwrap().to_owned();
    events.next("finished", &[]);

    let (rt, raw) = raw_market(&url);
    let mallory = NodeKey::generate(2048).unwrap();
    let task = |id: &str| Task {
        task: id.into(),
        model: "claude-haiku-4-5".into(),
        max_tokens: 1000,
        prompt_bytes: 4,
        prompt_sha256: String::new(),
        bid: 50,
        candidates: vec![provider_id.clone()],
        timeout_secs: 30,
        payload: String::new(),
        command: None,
    };
    let publish = |subject: String, bytes: Vec<u8>| {
        rt.block_on(raw.publish(&subject, &subject, bytes)).unwrap();
    };
    // A task with its signature stripped.
    let (signed, _) = seal(&mallory, Body::Task(task("unsigned"))).unwrap();
    let mut unsigned: Value = serde_json::from_slice(&signed).unwrap();
    unsigned.as_object_mut().unwrap().remove("sig");
    publish(
        "cmm.task.unsigned".into(),
        serde_json::to_vec(&unsigned).unwrap(),
    );
    // A task edited after signing: a bigger bid.
    let (signed, _) = seal(&mallory, Body::Task(task("edited"))).unwrap();
    let mut edited: Value = serde_json::from_slice(&signed).unwrap();
    let payload = B64.decode(edited["signed"].as_str().unwrap()).unwrap();
    let payload = String::from_utf8(payload).unwrap().replace("50", "99");
    edited["signed"] = Value::from(B64.encode(payload));
    publish(
        "cmm.task.edited".into(),
        serde_json::to_vec(&edited).unwrap(),
    );
    // The requester's genuine task, byte for byte, a second time.
    let subject = format!("cmm.task.{genuine_task}");
    let again = rt
        .block_on(raw.read(TASKS_STREAM, &subject, 1))
        .unwrap()
        .remove(0)
        .bytes
        .to_vec();
    publish(subject, again);

    // The provider counts each and runs none of them.
    let expected = serde_json::json!({"bad-signature": 1, "replayed": 1, "unsigned": 1});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = provider.home.json(&["market", "stats"]).1;
        if stats["dropped_here"] == expected {
            break;
        }
        assert!(Instant::now() < deadline, "{stats:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = stop(serving);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(provider.home.audit_of("job.admitted").len(), 1);

    // A claim squatted by a node that is not a candidate: the requester
    // refuses it, counts it, and locks nothing.
    put_offer(&rt, &raw, &mallory);
    let asking =
        market_execute_in_background(&requester, &["--json", "--model", "claude-haiku-4-5"]);
    let posted = rt.block_on(async {
        let mut tasks = raw
            .watch(TASKS_STREAM, "cmm.task.*", Start::Since(0))
            .await
            .unwrap();
        loop {
            let stored = tasks.next().await.unwrap().unwrap();
            let id = stored.subject.trim_start_matches("cmm.task.").to_owned();
            if ![genuine_task.as_str(), "unsigned", "edited"].contains(&id.as_str()) {
                return id;
            }
        }
    });
    let squatter = NodeKey::generate(2048).unwrap();
    let (claim, _) = seal(
        &squatter,
        Body::Claim(Claim {
            task: posted.clone(),
            requester: requester.id.clone(),
            price: 1,
        }),
    )
    .unwrap();
    rt.block_on(raw.claim(&posted, claim)).unwrap();
    let run: Run = asking.wait_with_output().expect("execute's output").into();
    let doc = run.json();
    assert_eq!(doc["outcome"], "unclaimed", "{doc:#}");
    let stats = requester.json(&["market", "stats"]);
    assert_eq!(
        stats["dropped_here"],
        serde_json::json!({"not-authorised": 1}),
        "{stats:#}"
    );
    let ledger = requester.json(&["market", "ledger", "--task", &posted]);
    assert_eq!(ledger["lines"], serde_json::json!([]), "{ledger:#}");
}

#[test]
fn the_output_streams_to_the_requester_while_the_job_runs() {
    use std::io::Read as _;

    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 40, &[]);
    let issuer = requester.id.clone();
    let provider = provider_home(&url, &issuer, &[]);
    // About ten words at 300 ms each: seconds of output to stream.
    provider.mock.set_delta_delay(Duration::from_millis(300));
    let serving = serve(&provider, &["--price", "12"]);
    wait_for_offers(&requester, 1);

    // Without --json: the output goes to the terminal as it comes.
    let mut asking = market_execute_in_background(&requester, &[]);
    let mut stdout = asking.stdout.take().unwrap();
    let mut first = [0; 1];
    assert_eq!(stdout.read(&mut first).unwrap(), 1, "no output at all");
    assert!(
        !provider
            .home
            .audit_kinds()
            .contains(&"market.result".to_owned()),
        "nothing streamed: the first output came after the provider's result"
    );
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let run: Run = asking.wait_with_output().expect("execute's output").into();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains("not the provider's checked result"),
        "{}",
        run.stderr
    );

    let mut shown = first.to_vec();
    shown.extend_from_slice(&rest);
    let shown = String::from_utf8(shown).unwrap();
    let task = run
        .stderr
        .split_whitespace()
        .nth(1)
        .expect("the first progress line names the task")
        .to_owned();
    let result = requester.json(&["market", "result", &task]);
    let output = result["output"].as_str().unwrap();
    assert!(output.split_whitespace().count() >= 8, "{output}");
    assert_eq!(shown.trim_end(), output.trim_end(), "each byte shown once");
    assert_eq!(stop(serving).code, 0);
}

#[test]
fn a_task_for_a_busy_provider_waits_for_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &[]);
    let issuer = requester.id.clone();
    let provider = provider_home(&url, &issuer, &["market.slots=1"]);
    // Each job streams for a second or more: the second task arrives while
    // the only slot is busy.
    provider.mock.set_delta_delay(Duration::from_millis(150));
    let mut serving = serve(&provider, &["--price", "10"]);
    let events = Events::of(&mut serving);
    wait_for_offers(&requester, 1);

    let start = || market_execute_in_background(&requester, &["--json"]);
    let first = start();
    events.next("claimed", &[]);
    let second = start();
    let waiting = events.next("waiting", &["claimed"]);
    for asking in [first, second] {
        let run: Run = asking.wait_with_output().expect("execute's output").into();
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        assert_eq!(run.json()["outcome"], "completed");
    }
    let claimed = events.next("claimed", &[]);
    assert_eq!(claimed["task"], waiting["task"]);
    assert_eq!(stop(serving).code, 0);
}

/// Puts an offer signed by a node that never claims anything: a task
/// posted to it stays open for the claim wait.
fn silent_offer(
    url: &str,
) -> (
    tokio::runtime::Runtime,
    claude_max_market::market::Transport,
) {
    let (rt, raw) = raw_market(url);
    let silent = claude_max_market::crypto::NodeKey::generate(2048).unwrap();
    put_offer(&rt, &raw, &silent);
    (rt, raw)
}

/// Puts a 5-RUV offer for claude-haiku-4-5 signed by `key`, as a node that
/// advertises and then does as it likes.
fn put_offer(
    rt: &tokio::runtime::Runtime,
    raw: &claude_max_market::market::Transport,
    key: &claude_max_market::crypto::NodeKey,
) {
    use claude_max_market::market::message::seal;
    use claude_max_market::market::types::{Body, Offer};

    let (offer, _) = seal(
        key,
        Body::Offer(Offer {
            slots: 1,
            busy: 0,
            price: 5,
            models: vec!["claude-haiku-4-5".into()],
            max_tokens: 100_000,
            images: Vec::new(),
            token_price: 0,
        }),
    )
    .unwrap();
    rt.block_on(raw.put_offer(&key.node_id(), offer)).unwrap();
}

/// The id of the first task posted on the market, waiting up to a minute.
pub(crate) fn first_posted_task(
    rt: &tokio::runtime::Runtime,
    raw: &claude_max_market::market::Transport,
) -> String {
    use claude_max_market::market::transport::{Start, TASKS_STREAM};
    use futures_util::StreamExt as _;

    rt.block_on(async {
        let mut tasks = raw
            .watch(TASKS_STREAM, "cmm.task.*", Start::Since(0))
            .await
            .unwrap();
        let stored = tokio::time::timeout(Duration::from_secs(60), tasks.next())
            .await
            .expect("no task was posted within 60 s: did the requester fail first?")
            .unwrap()
            .unwrap();
        stored.subject.trim_start_matches("cmm.task.").to_owned()
    })
}

#[test]
fn a_price_the_balance_cannot_cover_is_refused_before_anyone_is_kept_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 40, &[]);

    // With nothing granted, no offer can fit: said at once, not after
    // waiting for offers.
    let home = Home::opted_in();
    let issuer = node_id(&home);
    let broke = Peer::join(home, &url, &issuer);
    let run = broke.home.run(&market_args(&[]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("0 RUV available"), "{}", run.stderr);

    // Posting at a price over the balance: refused, nothing posted.
    let run = requester.home.run(&market_args(&["--max-price", "60"]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("40 RUV available") && run.stderr.contains("up to 60"),
        "{}",
        run.stderr
    );
    assert_eq!(requester.json(&["market", "tasks"]), serde_json::json!([]));

    // Raising the bid on an open task past the balance: refused too, and the
    // task keeps its bid; a raise the balance covers goes through.
    let (rt, raw) = silent_offer(&url);
    let mut asking = market_execute_in_background(
        &requester,
        &["--json", "--model", "claude-haiku-4-5", "--max-price", "30"],
    );
    let task = first_posted_task(&rt, &raw);
    let run = requester
        .home
        .run(&["bid", "--task-id", &task, "--max-price", "60"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("40 RUV available") && run.stderr.contains("up to 60"),
        "{}",
        run.stderr
    );
    let placed = requester.json(&["bid", "--task-id", &task, "--max-price", "35"]);
    assert_eq!(placed["previous"], 30, "{placed:#}");
    asking.kill().expect("stopping execute --market");
    asking.wait().expect("reaping execute --market");
}

#[test]
fn a_changed_price_shows_in_the_offer_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 10, &[]);
    let provider = provider_home(&url, &requester.id, &["limits.maxTokensPerTask=2000"]);
    // No --price: the offer is pricing's quote, (10 + 2 × 2) × 1.25 rounded up.
    let mut serving = serve(&provider, &[]);
    let events = Events::of(&mut serving);
    assert_eq!(events.next("serving", &[])["price"], 18);
    wait_for_offers(&requester, 1);

    // Now (40 + 2 × 2) × 1.25, by the next refresh of the offer.
    provider.home.set(&["market.basePrice=40"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let offers = requester.json(&["market", "offers"]);
        if offers[0]["price"] == 55 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the offer still asks the old price: {offers:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let prices: Vec<Value> = provider
        .home
        .audit_of("market.offer")
        .iter()
        .map(|e| e["details"]["price"].clone())
        .collect();
    assert_eq!(prices, [18, 55], "each price is on the audit log");
    assert_eq!(stop(serving).code, 0);
}

#[test]
fn a_market_job_is_held_to_the_requesters_own_approval_and_limits_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &["limits.dailyTasks=1"]);
    let provider = provider_home(&url, &requester.id, &[]);
    let serving = serve(&provider, &["--price", "10"]);
    wait_for_offers(&requester, 1);

    // Approval asks, and without a terminal nobody answers: a denial, with
    // nothing posted.
    let (code, asked) = requester.home.json(&[
        "execute",
        "--market",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "1000",
    ]);
    assert_eq!(code, 3, "{asked:#}");
    let message = asked["error"]["message"].as_str().unwrap();
    assert!(message.contains("approval asks"), "{message}");
    assert_eq!(requester.json(&["market", "tasks"]), serde_json::json!([]));

    // Approved, it runs on the provider and is this node's job like any.
    let (code, done) = market_execute(&requester, &[]);
    assert_eq!(code, 0, "{done:#}");
    assert_eq!(done["outcome"], "completed");
    let jobs = requester.json(&["jobs"]);
    assert_eq!(jobs[0]["id"], done["task"], "{jobs:#}");
    assert_eq!(jobs[0]["state"], "finished", "{jobs:#}");
    assert_eq!(jobs[0]["output_tokens"], done["output_tokens"], "{jobs:#}");
    let status = requester.json(&["status"]);
    assert_eq!(status["usage_today"]["tasks_today"], 1, "{status:#}");
    assert_eq!(status["usage_today"]["running_jobs"], 0, "{status:#}");
    let usage = requester.json(&["usage"]);
    assert_eq!(usage["totals"]["tasks"], 1, "{usage:#}");
    assert_eq!(usage["totals"]["succeeded"], 1, "{usage:#}");

    // That was the day's one task: the next is denied here, never posted.
    let (code, denied) = market_execute(&requester, &[]);
    assert_eq!(code, 3, "{denied:#}");
    let message = denied["error"]["message"].as_str().unwrap();
    assert!(message.contains("limits"), "{message}");
    let tasks = requester.json(&["market", "tasks"]);
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "{tasks:#}");
    assert_eq!(stop(serving).code, 0);
}

#[test]
fn a_server_without_jetstream_is_named_as_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_without_jetstream(dir.path());
    let home = Home::new();
    home.set(&[&format!("market.url={}", server.url())]);
    let run = home.run(&["market", "offers"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("does not have JetStream enabled")
            && run.stderr.contains("nats-server -js"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_requester_waits_for_a_provider_that_is_still_starting() {
    use std::io::BufRead as _;

    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    // Far longer than a provider takes to start, even on a loaded machine.
    let requester = funded_requester(&url, 40, &["market.offerWaitSecs=120"]);
    let provider = provider_home(&url, &requester.id, &[]);

    // The requester first, as after `serve &` on a machine where serve is
    // slower to advertise than execute is to look.
    let mut asking = market_execute_in_background(&requester, &[]);
    let stderr = asking.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let waiting = lines
        .next()
        .expect("execute --market ended without a word")
        .unwrap();
    assert!(
        waiting.contains("no provider offers") && waiting.contains("waiting up to 120 s"),
        "{waiting}"
    );
    let serving = serve(&provider, &["--price", "10"]);
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let run: Run = asking.wait_with_output().expect("execute's output").into();
    let rest = rest.join().unwrap().join("\n");
    assert_eq!(run.code, 0, "{}\n{rest}", run.stdout);
    assert!(rest.contains("completed"), "{rest}");
    assert_eq!(stop(serving).code, 0);
}

#[test]
fn with_no_provider_serving_the_requester_says_so_after_its_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let requester = funded_requester(&server.url(), 40, &["market.offerWaitSecs=1"]);
    let run = requester.home.run(&market_args(&[]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("there are no provider offers; waited 1 s")
            && run
                .stderr
                .contains("is a provider running `claude-max-market serve`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_checkpoint_lets_a_new_node_start_after_the_purged_entries_with_the_same_balances() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let issuer = issuer_on(&url);
    let (a, b) = (
        Peer::join(Home::new(), &url, &issuer.id),
        Peer::join(Home::new(), &url, &issuer.id),
    );
    for (to, amount) in [(&a.id, "100"), (&b.id, "40"), (&a.id, "5")] {
        issuer.json(&["market", "grant", "--to", to, "--amount", amount]);
    }

    // Without --purge the stream keeps everything, and a full replay
    // checks the checkpoint against its own state.
    let kept = issuer.json(&["market", "checkpoint"]);
    assert_eq!(
        (kept["seq"].as_u64(), kept["stored_at"].as_u64()),
        (Some(3), Some(4)),
        "{kept:#}"
    );
    assert!(kept.get("purged").is_none());
    let full = a.json(&["market", "ledger"]);
    assert_eq!(full["lines"][3]["kind"], "checkpoint");
    assert_eq!(full["lines"][3]["effect"], "applied", "{full:#}");
    assert!(full.get("diverged").is_none());

    let purged = issuer.json(&["market", "checkpoint", "--purge"]);
    assert_eq!(purged["seq"], 4);
    assert_eq!(purged["purged"], 4, "{purged:#}");
    issuer.json(&["market", "grant", "--to", &a.id, "--amount", "7"]);

    let newcomer = Peer::join(Home::new(), &url, &issuer.id);
    let resumed = newcomer.json(&["market", "ledger"]);
    let lines = resumed["lines"].as_array().unwrap();
    assert_eq!(
        lines.len(),
        1,
        "only what came after the checkpoint: {resumed:#}"
    );
    assert_eq!(lines[0]["seq"], 6);
    assert_eq!(resumed["accounts"][&a.id]["available"], 112);
    assert_eq!(resumed["accounts"][&b.id]["available"], 40);
    assert_eq!(newcomer.json(&["market", "balance"])["available"], 0);
    let balance = a.json(&["market", "balance"]);
    assert_eq!(
        (balance["available"].as_u64(), balance["granted"].as_u64()),
        (Some(112), Some(112))
    );

    // A node that does not trust the checkpoint's issuer cannot start.
    let stranger = Home::new();
    let other_issuer = node_id(&Home::new());
    let stranger = Peer::join(stranger, &url, &other_issuer);
    let run = stranger.home.run(&["market", "ledger"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("purged by a checkpoint")
            && run
                .stderr
                .contains("not one of this node's trusted issuers"),
        "{}",
        run.stderr
    );
    // Nor does a node sign a checkpoint for an issuer it does not trust.
    let refused = a.home.run(&["market", "checkpoint"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("market.issuerKeys"),
        "{}",
        refused.stderr
    );
}
