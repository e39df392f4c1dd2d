//! Work over the market: command tasks (an image named by digest, a
//! command, and a workspace that travels sealed through the object store
//! to the provider and back, landing with the requester as a local job's
//! does), and the provider's signed receipt that settles a task. Real peers
//! on a real NATS server, real containers.

use std::path::Path;
use std::process::Stdio;

use crate::docker_support::docker;
use crate::images;
use mock_anthropic::{Scenario, ToolCall};

use crate::market::{
    Events, Peer, first_posted_task, funded_requester, market_execute, node_id, provider_home,
    raw_market, serve, stop, wait_for_offers,
};
use crate::nats::NatsServer;
use crate::support::Run;

/// The 20 MiB file every test workspace carries, so it spans many chunks.
const BIG: usize = 20 << 20;

/// The command tests' folder, with [`BIG`] bytes more in `big.bin`.
fn folder() -> tempfile::TempDir {
    let dir = crate::commands::folder();
    let big: Vec<u8> = (0..BIG).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), big).unwrap();
    dir
}

/// The ledger's lines for `task`, as `(kind, amount)`.
fn ledger_of(peer: &Peer, task: &str) -> Vec<(String, u64)> {
    let ledger = peer.json(&["market", "ledger", "--task", task]);
    ledger["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or_default().to_owned(),
                l["amount"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// An image's repository, which a provider must allow for market jobs
/// (`compliance.allowedImages`).
fn repository(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(repo, _)| repo)
}

fn tools_repository() -> &'static str {
    repository(images::tools())
}

/// `execute --market` of `script` in the tools image on `workspace`.
fn market_command<'a>(workspace: &'a str, script: &'a str) -> Vec<&'a str> {
    vec![
        "execute",
        "--market",
        "--approve-all",
        "--image",
        images::tools(),
        "--workspace",
        workspace,
        "--",
        "sh",
        "-c",
        script,
    ]
}

#[test]
fn a_command_task_takes_its_workspace_to_the_provider_and_brings_the_changes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &[]);
    let allowed = format!("compliance.allowedImages={}", tools_repository());
    // The cheapest offer says it runs only the built-in job image: the
    // requester does not send it the task.
    let narrow = provider_home(&url, &requester.id, &[]);
    let narrow_serving = serve(&narrow, &["--price", "8"]);
    // The next offers the image, but its owner then takes it off the list:
    // its compliance passes the task over, and the third one takes it.
    let strict = provider_home(&url, &requester.id, &[&allowed]);
    let mut strict_serving = serve(&strict, &["--price", "10"]);
    let strict_events = Events::of(&mut strict_serving);
    let provider = provider_home(&url, &requester.id, &[&allowed]);
    let serving = serve(&provider, &["--price", "12"]);
    wait_for_offers(&requester, 3);
    let offers = requester.json(&["market", "offers"]);
    let narrow_offer = offers
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["node"] == node_id(&narrow.home).as_str())
        .unwrap();
    assert_eq!(
        narrow_offer["images"],
        serde_json::json!(["claude-max-market-job"])
    );
    strict
        .home
        .set(&["compliance.allowedImages=claude-max-market-job"]);

    let work = folder();
    let workspace = work.path().to_str().unwrap();
    let script = "printf 'one\\nthree\\n' > notes.txt && rm gone.txt && echo new > added.txt \
                  && wc -c < big.bin";
    let mut args = market_command(workspace, script);
    args.insert(0, "--json");
    let run = requester.home.run(&args);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["outcome"], "completed", "{doc:#}");
    assert_eq!(doc["price"], 12, "{doc:#}");
    assert_eq!(doc["exit_code"], 0, "{doc:#}");
    let skipped = strict_events.next("skipped", &["claimed"]);
    let reason = skipped["reason"].as_str().unwrap();
    assert!(reason.contains("compliance.allowedImages"), "{reason}");
    let posted = requester.home.audit_of("market.task-posted").remove(0);
    let candidates = posted["details"]["candidates"].to_string();
    assert!(!candidates.contains(&node_id(&narrow.home)), "{candidates}");
    assert!(candidates.contains(&node_id(&strict.home)), "{candidates}");
    assert_eq!(doc["output"].as_str().unwrap().trim(), BIG.to_string());
    let ws = &doc["workspace"];
    assert_eq!(ws["added"], serde_json::json!(["added.txt"]), "{ws:#}");
    assert_eq!(ws["changed"], serde_json::json!(["notes.txt"]));
    assert_eq!(ws["removed"], serde_json::json!(["gone.txt"]));
    assert_eq!(
        read(work.path(), "notes.txt"),
        "one\ntwo\n",
        "untouched so far"
    );

    // It lands as a local job's does: shown, then applied on request.
    let task = doc["task"].as_str().unwrap();
    let shown = requester.home.ok(&["result", task, "--diff"]).stdout;
    assert!(shown.contains("-two\n+three"), "{shown}");
    requester.home.ok(&["result", task, "--apply"]);
    assert_eq!(read(work.path(), "notes.txt"), "one\nthree\n");
    assert_eq!(read(work.path(), "added.txt"), "new\n");
    assert!(!work.path().join("gone.txt").exists());
    assert_eq!(
        std::fs::metadata(work.path().join("big.bin"))
            .unwrap()
            .len() as usize,
        BIG
    );

    // The provider ran it in the image the requester named, by digest, and
    // kept none of the workspace; neither object is left in the store.
    let admitted = provider.home.audit_of("job.admitted").remove(0);
    let job = &admitted["details"]["job"];
    assert!(
        job["image_id"].as_str().unwrap().starts_with("sha256:"),
        "{job:#}"
    );
    assert_eq!(job["workspace"]["files"], 5, "{job:#}");
    assert!(
        !provider.home.path().join("results").join(task).exists(),
        "the provider kept the requester's workspace"
    );
    let (rt, raw) = raw_market(&url);
    for way in ["in", "out"] {
        let scratch = dir.path().join(way);
        let left = rt
            .block_on(raw.get_workspace(&format!("{task}-{way}"), u64::MAX, &scratch))
            .unwrap();
        assert_eq!(left, None, "the {way} object is still stored");
    }
    let kinds: Vec<_> = ledger_of(&requester, task)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kinds, ["lock", "receipt", "release"]);
    for serving in [serving, strict_serving, narrow_serving] {
        assert_eq!(stop(serving).code, 0);
    }
}

#[test]
fn a_workspace_changed_in_the_store_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &["market.claimWaitSecs=10"]);
    let allowed = format!("compliance.allowedImages={}", tools_repository());
    let provider = provider_home(&url, &requester.id, &[&allowed]);
    // Offered, but not serving yet: the task waits for it while its
    // workspace is changed in the store.
    provider.home.ok(&["advertise", "--price", "12"]);
    wait_for_offers(&requester, 1);

    let work = folder();
    let workspace = work.path().to_str().unwrap();
    let mut args = market_command(workspace, "echo ran > ran.txt");
    args.insert(0, "--json");
    let mut cmd = requester.home.command();
    cmd.args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let asking = cmd.spawn().expect("starting execute --market");
    let (rt, raw) = raw_market(&url);
    let task = first_posted_task(&rt, &raw);
    rt.block_on(flip_a_byte(&url, &format!("{task}-in")));

    let mut serving = serve(&provider, &["--price", "12"]);
    let events = Events::of(&mut serving);
    let skipped = events.next("skipped", &["claimed"]);
    assert_eq!(skipped["task"], task.as_str());
    let reason = skipped["reason"].as_str().unwrap();
    assert!(reason.contains("its workspace was refused"), "{reason}");

    let run: Run = asking.wait_with_output().expect("execute's output").into();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["outcome"], "unclaimed", "{}", run.stdout);
    let kinds = provider.home.audit_kinds();
    assert!(
        !kinds
            .iter()
            .any(|k| k == "market.claim" || k == "job.admitted"),
        "{kinds:?}"
    );
    assert_eq!(stop(serving).code, 0);
}

/// Replaces the last chunk of object `name` in the workspaces store with a
/// copy that has one byte flipped, as a faulty or hostile server would.
async fn flip_a_byte(url: &str, name: &str) {
    use claude_max_market::market::transport::WORKSPACES_STORE;

    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let store = js.get_object_store(WORKSPACES_STORE).await.unwrap();
    let info = store.info(name).await.unwrap();
    let subject = format!("$O.{WORKSPACES_STORE}.C.{}", info.nuid);
    let stream = js
        .get_stream(format!("OBJ_{WORKSPACES_STORE}"))
        .await
        .unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    let mut payload = last.payload.to_vec();
    let middle = payload.len() / 2;
    payload[middle] ^= 0x01;
    stream.delete_message(last.sequence).await.unwrap();
    js.publish(subject, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[test]
fn a_receipt_of_the_metered_usage_settles_a_task_priced_by_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &[]);
    let provider = provider_home(&url, &requester.id, &[]);
    provider.mock.push(Scenario::Reply {
        text: "7919 is the 1000th prime".into(),
        input_tokens: 1200,
        output_tokens: 300,
    });
    // At most 20 RUV a task, 4 RUV per 1,000 tokens it uses.
    let serving = serve(&provider, &["--price", "20", "--token-price", "4"]);
    wait_for_offers(&requester, 1);

    let (code, doc) = market_execute(&requester, &["--json"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["outcome"], "completed", "{doc:#}");
    assert_eq!(doc["price"], 20, "{doc:#}");
    // The receipt is what the provider's upstream reported, reply by reply.
    let reported = provider.mock.reported();
    let receipt = &doc["receipt"];
    let models = receipt["models"].as_array().unwrap();
    let sum = |key: &str| models.iter().map(|m| m[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        sum("input_tokens") + sum("cache_creation_tokens") + sum("cache_read_tokens"),
        reported.input_tokens,
        "{receipt:#}"
    );
    assert_eq!(sum("output_tokens"), reported.output_tokens, "{receipt:#}");
    assert_eq!(receipt["requests"], 1);
    assert_eq!(receipt["replies"].as_array().unwrap().len(), 1);
    let tokens = reported.input_tokens + reported.output_tokens;
    let paid = (4 * tokens).div_ceil(1000);
    assert!(paid < 20);
    assert_eq!(receipt["amount"], paid, "{receipt:#}");
    assert_eq!(doc["paid"], paid, "{doc:#}");

    // Lock 20, the receipt, a release of what it asked; the rest came back.
    let task = doc["task"].as_str().unwrap();
    let lines = ledger_of(&requester, task);
    let expected = [("lock", 20), ("receipt", paid), ("release", paid)]
        .map(|(kind, amount)| (kind.to_owned(), amount));
    assert_eq!(lines, expected);
    let provider_id = node_id(&provider.home);
    let balances = requester.json(&["market", "ledger"])["accounts"].clone();
    assert_eq!(
        balances[&requester.id]["available"],
        100 - paid,
        "{balances:#}"
    );
    assert_eq!(balances[&provider_id]["earned"], paid, "{balances:#}");
    assert_eq!(stop(serving).code, 0);
}

#[test]
fn claude_code_works_on_a_workspace_on_a_provider_and_is_paid_by_its_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &[]);
    let image = images::claude_code();
    let allowed = format!("compliance.allowedImages={}", repository(image));
    let provider = provider_home(&url, &requester.id, &[&allowed]);
    let bash = |command: &str| {
        ToolCall::new(
            "Bash",
            serde_json::json!({ "command": command, "description": "Edit the notes" }),
        )
    };
    provider.mock.push(Scenario::ToolUse {
        text: "I'll change the notes.".into(),
        calls: vec![bash(
            "printf 'one\\nthree\\n' > notes.txt && wc -c < big.bin",
        )],
        input_tokens: 2100,
        output_tokens: 33,
    });
    provider.mock.push(Scenario::Reply {
        text: "notes.txt now says three.".into(),
        input_tokens: 2400,
        output_tokens: 9,
    });
    let serving = serve(&provider, &["--price", "12"]);
    wait_for_offers(&requester, 1);

    let work = folder();
    let run = requester.home.run(&[
        "--json",
        "execute",
        "--market",
        "--approve-all",
        "--agent",
        "claude-code",
        "--image",
        image,
        "--workspace",
        work.path().to_str().unwrap(),
        "--prompt",
        "Replace two with three in notes.txt",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["outcome"], "completed", "{doc:#}");
    assert!(
        doc["output"]
            .as_str()
            .unwrap()
            .contains("notes.txt now says three."),
        "{doc:#}"
    );
    assert_eq!(
        doc["workspace"]["changed"],
        serde_json::json!(["notes.txt"]),
        "{doc:#}"
    );
    let task = doc["task"].as_str().unwrap();
    let diff = requester.home.ok(&["result", task, "--diff"]).stdout;
    assert!(diff.contains("-two\n+three"), "{diff}");

    // The receipt is the provider's mock's account, request by request, and
    // what the task cost at a price per task.
    let reported = provider.mock.reported();
    let receipt = &doc["receipt"];
    let models = receipt["models"].as_array().unwrap();
    let sum = |key: &str| models.iter().map(|m| m[key].as_u64().unwrap()).sum::<u64>();
    let input = sum("input_tokens") + sum("cache_creation_tokens") + sum("cache_read_tokens");
    assert_eq!(input, reported.input_tokens, "{receipt:#}");
    assert_eq!(sum("output_tokens"), reported.output_tokens, "{receipt:#}");
    assert_eq!(receipt["requests"], reported.replies, "{receipt:#}");
    assert_eq!(receipt["amount"], 12, "{receipt:#}");
    assert_eq!(doc["paid"], 12, "{doc:#}");
    assert_eq!(stop(serving).code, 0);
}

#[test]
fn a_workspace_changed_on_its_way_back_disputes_the_result_and_nothing_is_paid() {
    use base64::Engine as _;
    use claude_max_market::crypto::{NodeKey, PublicKey};
    use claude_max_market::market::message::seal;
    use claude_max_market::market::types::{Body, Claim, Offer, TaskResult};
    use claude_max_market::market::workspace;
    use sha2::{Digest, Sha256};

    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &[]);
    // The provider is played here with the library: it claims the task and
    // returns a good output, but its workspace object is changed in the
    // store before the requester reads it.
    let (rt, raw) = raw_market(&url);
    let provider = NodeKey::generate(2048).unwrap();
    let (offer, _) = seal(
        &provider,
        Body::Offer(Offer {
            slots: 1,
            busy: 0,
            price: 7,
            models: vec!["claude-haiku-4-5".into()],
            max_tokens: 10_000_000,
            images: Vec::new(),
            token_price: 0,
        }),
    )
    .unwrap();
    // Kept alive as `serve` keeps an offer, until the task is posted: a
    // requester slow to start on a loaded machine must still find it.
    let posted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refresher = {
        let (handle, raw, posted) = (rt.handle().clone(), raw.clone(), posted.clone());
        let node = provider.node_id();
        std::thread::spawn(move || {
            while !posted.load(std::sync::atomic::Ordering::SeqCst) {
                handle
                    .block_on(raw.put_offer(&node, offer.clone()))
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        })
    };

    let work = folder();
    let mut cmd = requester.home.command();
    cmd.args(["--json", "execute", "--model", "claude-haiku-4-5"])
        .args(&market_command(work.path().to_str().unwrap(), "true")[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let asking = cmd.spawn().expect("starting execute --market");
    let task = first_posted_task(&rt, &raw);
    posted.store(true, std::sync::atomic::Ordering::SeqCst);
    refresher.join().unwrap();
    let (claim, _) = seal(
        &provider,
        Body::Claim(Claim {
            task: task.clone(),
            requester: requester.id.clone(),
            price: 7,
        }),
    )
    .unwrap();
    rt.block_on(raw.claim(&task, claim)).unwrap();

    let pem = requester.home.path().join("requester.pem");
    requester
        .home
        .ok(&["keys", "export-public", "--out", pem.to_str().unwrap()]);
    let to = PublicKey::from_pem(&std::fs::read_to_string(&pem).unwrap()).unwrap();
    let returned = tempfile::tempdir().unwrap();
    std::fs::write(returned.path().join("notes.txt"), "one\nthree\n").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let out =
        cap_std::fs::Dir::open_ambient_dir(returned.path(), cap_std::ambient_authority()).unwrap();
    let object = workspace::send(
        rt.handle(),
        &raw,
        &out,
        scratch.path(),
        &format!("{task}-out"),
        std::slice::from_ref(&to),
    )
    .unwrap();
    rt.block_on(flip_a_byte(&url, &object.object));
    let output = b"done";
    let mut sealed = Vec::new();
    claude_max_market::crypto::encrypt(&output[..], &mut sealed, &[to], 1 << 16).unwrap();
    let (result, _) = seal(
        &provider,
        Body::Result(TaskResult {
            task: task.clone(),
            state: "finished".into(),
            sha256: hex::encode(Sha256::digest(output)),
            payload: base64::engine::general_purpose::STANDARD.encode(&sealed),
            input_tokens: 0,
            output_tokens: 0,
            exit_code: Some(0),
            workspace: Some(object),
        }),
    )
    .unwrap();
    let subject = format!("cmm.result.{task}");
    rt.block_on(raw.publish(&subject, &subject, result))
        .unwrap();

    let run: Run = asking.wait_with_output().expect("execute's output").into();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["outcome"], "disputed", "{doc:#}");
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("returned workspace"),
        "{doc:#}"
    );
    let kinds: Vec<_> = ledger_of(&requester, &task)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kinds, ["lock", "refund"]);
    let balance = requester.json(&["market", "balance"]);
    assert_eq!(balance["available"], 100, "{balance:#}");
    assert!(
        !requester.home.path().join("results").join(&task).exists(),
        "what did not verify was kept"
    );
}

#[test]
fn a_provider_pulls_a_missing_image_by_digest_only_from_a_registry_it_trusts() {
    let registry = crate::oci::Registry::start();
    // An image of its own, so removing it here takes nothing from other
    // tests: the tools image with a label, pushed and then removed.
    let repo = format!("{}/cmm-pull-test", registry.host());
    let tagged = format!("{repo}:1");
    let dockerfile = format!(
        "FROM {}\nLABEL cmm.test.pull=\"{}\"\n",
        images::tools(),
        std::process::id()
    );
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tagged, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    build
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    assert!(build.wait().unwrap().success());
    docker(&["push", &tagged]);
    let pinned = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &tagged,
    ]);
    let pinned = pinned.trim().to_owned();
    assert!(pinned.starts_with(&format!("{repo}@sha256:")), "{pinned}");
    docker(&["rmi", &tagged]);

    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let url = server.url();
    let requester = funded_requester(&url, 100, &[]);
    let allowed = format!("compliance.allowedImages={repo}");
    let trusts = format!("market.pullRegistries={}", registry.host());
    // The cheaper provider trusts no registry: it passes the task over.
    let wary = provider_home(&url, &requester.id, &[&allowed]);
    let mut wary_serving = serve(&wary, &["--price", "10"]);
    let wary_events = Events::of(&mut wary_serving);
    let provider = provider_home(&url, &requester.id, &[&allowed, &trusts]);
    let serving = serve(&provider, &["--price", "12"]);
    wait_for_offers(&requester, 2);

    let (code, doc) = requester.home.json(&[
        "execute",
        "--market",
        "--approve-all",
        "--image",
        &pinned,
        "--",
        "sh",
        "-c",
        "echo pulled",
    ]);
    let skipped = wary_events.next("skipped", &["claimed"]);
    let reason = skipped["reason"].as_str().unwrap();
    assert!(reason.contains("market.pullRegistries"), "{reason}");
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["outcome"], "completed", "{doc:#}");
    assert_eq!(doc["output"].as_str().unwrap().trim(), "pulled");
    let admitted = provider.home.audit_of("job.admitted").remove(0);
    assert_eq!(admitted["details"]["job"]["image"], pinned.as_str());
    docker(&["rmi", &pinned]);
    for serving in [serving, wary_serving] {
        assert_eq!(stop(serving).code, 0);
    }
}
