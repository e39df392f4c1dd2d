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
struct Peer {
    home: Home,
    id: String,
}

impl Peer {
    fn join(home: Home, url: &str, issuer: &str) -> Peer {
        home.set(&[
            &format!("market.url={url}"),
            &format!("market.issuerKeys={issuer}"),
            "market.claimWaitSecs=20",
            "market.offerTtlSecs=6",
        ]);
        let id = node_id(&home);
        Peer { home, id }
    }

    fn json(&self, args: &[&str]) -> Value {
        let (code, doc) = self.home.json(args);
        assert_eq!(code, 0, "{args:?}: {doc:#}");
        doc
    }
}

fn node_id(home: &Home) -> String {
    let (code, doc) = home.json(&["keys", "show"]);
    assert_eq!(code, 0, "{doc:#}");
    doc["current"]["node_id"].as_str().unwrap().to_owned()
}

/// `serve` in the background with the owner's key, as a provider runs it.
fn serve(env: &JobHome, args: &[&str]) -> Child {
    let mut cmd = env.home.command();
    cmd.env("ANTHROPIC_API_KEY", KEY)
        .args(["--json", "serve", "--approve-all"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("starting serve")
}

/// Stops `serve` as an init system would, and returns what it printed.
fn stop(mut child: Child) -> Run {
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

fn wait_for_offers(peer: &Peer, count: usize) {
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

fn market_execute(peer: &Peer, args: &[&str]) -> (i32, Value) {
    let mut all = vec![
        "execute",
        "--market",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "1000",
    ];
    all.extend_from_slice(args);
    peer.home.json(&all)
}

#[test]
fn tasks_go_to_the_provider_that_fits_and_every_node_agrees_on_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();

    let issuer_home = Home::new();
    let issuer = node_id(&issuer_home);
    let issuer = Peer::join(issuer_home, &url, &issuer);

    // A serves both models at the higher price; B is cheaper but its own policy
    // refuses sonnet, whatever its offer says.
    let a_env = JobHome::new();
    let b_env = JobHome::new();
    b_env
        .home
        .set(&["compliance.allowedModels=claude-haiku-4-5"]);
    let requester = Peer::join(Home::opted_in(), &url, &issuer.id);
    let a_id = node_id(&a_env.home);
    let b_id = node_id(&b_env.home);
    for env in [&a_env, &b_env] {
        env.home.set(&[
            &format!("market.url={url}"),
            &format!("market.issuerKeys={}", issuer.id),
            "market.offerTtlSecs=6",
        ]);
    }
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
fn raw_market(
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
    let issuer_home = Home::new();
    let issuer = node_id(&issuer_home);
    let issuer = Peer::join(issuer_home, &url, &issuer);
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
    let requester_home = Home::opted_in();
    let issuer = node_id(&requester_home);
    let requester = Peer::join(requester_home, &url, &issuer);
    requester.json(&["market", "grant", "--to", &requester.id, "--amount", "40"]);

    let provider = JobHome::new();
    // Slow enough that the job is still streaming when the provider dies.
    provider.mock.set_delta_delay(Duration::from_millis(400));
    provider.home.set(&[
        &format!("market.url={url}"),
        &format!("market.issuerKeys={issuer}"),
        "market.offerTtlSecs=6",
    ]);
    let provider_id = node_id(&provider.home);
    let serving = serve(&provider, &["--price", "12"]);
    wait_for_offers(&requester, 1);

    let mut cmd = requester.home.command();
    cmd.args(["--json", "execute", "--market", "--prompt", PROMPT])
        .args(["--max-tokens", "1000", "--timeout", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let asking = cmd.spawn().expect("starting execute --market");
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

    // The dead provider's container is its owner's to clean up.
    provider.home.ok(&["clean", "--force"]);
    assert!(!crate::docker_support::exists(&container));
}

/// The `kind` of every audit row of a home.
fn audit_kinds(home: &Home) -> Vec<String> {
    let (code, doc) = home.json(&["audit", "--format", "json"]);
    assert_eq!(code, 0, "{doc:#}");
    doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_cluster_loses_a_server_mid_run_and_no_task_is_lost_or_run_twice() {
    const TASKS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path(), 3);
    let urls = cluster.url_list();

    let requester_home = Home::opted_in();
    let issuer = node_id(&requester_home);
    let requester = Peer::join(requester_home, &urls, &issuer);
    requester.home.set(&["market.replicas=3"]);
    requester.json(&["market", "grant", "--to", &requester.id, "--amount", "500"]);

    let providers: Vec<JobHome> = (0..2).map(|_| JobHome::new()).collect();
    for p in &providers {
        p.home.set(&[
            &format!("market.url={urls}"),
            &format!("market.issuerKeys={issuer}"),
            "market.replicas=3",
            "market.offerTtlSecs=6",
        ]);
    }
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
        let kinds = audit_kinds(&p.home);
        results += kinds.iter().filter(|k| *k == "market.result").count();
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
