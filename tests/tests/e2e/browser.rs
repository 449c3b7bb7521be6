//! The web pages in a real browser: headless Chromium loads `/` and
//! `/status` from a test cluster, runs their scripts, and prints the DOM,
//! which the tests read.
//!
//! Chromium is driven from the command line (`--dump-dom`), without
//! WebDriver. It must be installed (`chromium` or `chromium-browser` on
//! `PATH`, or `CHROMIUM=/path`); `.ci/run` installs the Debian package. A
//! missing browser fails the tests rather than skipping them.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tests::TestCluster;
use tokio::process::Command;
use tokio::time::Instant;

/// The longest one Chromium run may take on a busy machine.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads `url` in headless Chromium, lets its scripts run for
/// `budget` of virtual time (timers run fast; network waits are real), and
/// returns the serialized DOM.
async fn dump_dom(url: &str, budget: Duration) -> String {
    let profile = tempfile::tempdir().expect("chromium profile directory");
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a hung browser is killed together
        // with its renderer and GPU processes.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|error| {
        panic!("cannot start chromium ({}): {error}", chromium().display())
    });
    let pid = child.id();
    let output = match tokio::time::timeout(CHROMIUM_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("chromium output"),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &format!("-{pid}")])
                    .status();
            }
            panic!("chromium did not print the DOM of {url} within {CHROMIUM_TIMEOUT:?}");
        }
    };
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium failed on {url} ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser`
/// on `PATH`. Panics with what to install when there is none.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the web page tests need headless Chromium, but neither `chromium` nor \
         `chromium-browser` is on PATH: install it (`apt-get install chromium`, as \
         .ci/run does) or set CHROMIUM=/path/to/chromium"
    );
}

/// The opening tag and text content of the element with `id`, when the DOM
/// has one. The text is everything up to the element's closing tag, with
/// nested tags removed; the pages keep such elements free of nesting of
/// the same tag.
fn element(dom: &str, id: &str) -> Option<(String, String)> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let tag: String = dom[start + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let open_end = start + dom[start..].find('>')? + 1;
    let close = open_end + dom[open_end..].find(&format!("</{tag}>"))?;
    Some((
        dom[start..open_end].to_string(),
        strip_tags(&dom[open_end..close]),
    ))
}

fn strip_tags(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// How `text` appears in a serialized DOM text node.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// The generated corpus plus two documents whose text looks like markup,
/// to check that pages never turn result text into elements.
fn corpus_with_markup() -> Arc<Vec<leaf::Document>> {
    let mut documents = (*tests::small_corpus(3000)).clone();
    documents.push(leaf::Document {
        id: "markup-title".into(),
        title: "<img src=x id=injected-title> zebrafish & json".into(),
        body: "a zebrafish body".into(),
        popularity: None,
    });
    documents.push(leaf::Document {
        id: "markup-body".into(),
        title: "Zebrafish notes".into(),
        body: "zebrafish <script id=injected-body>alert(1)</script> <b>bold</b> & more".into(),
        popularity: None,
    });
    Arc::new(documents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_page_shows_results_from_the_url_query() {
    let cluster = TestCluster::builder()
        .shards(2)
        .documents(corpus_with_markup())
        .build()
        .await;
    let (status, body) = cluster.search("q=json&timeout_ms=5000").await;
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().expect("hits");
    assert!(!hits.is_empty(), "the corpus should match json: {body}");

    let dom = dump_dom(
        &cluster.url("/?q=json&timeout_ms=5000"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        dom.matches("<li class=\"hit\"").count(),
        hits.len(),
        "one result item per hit:\n{dom}"
    );
    for hit in hits {
        let title = hit["title"].as_str().expect("title");
        assert!(
            dom.contains(&format!("class=\"hit-title\">{}</h2>", escaped(title))),
            "title {title:?} is shown:\n{dom}"
        );
    }
    let lower = dom.to_lowercase();
    assert!(
        lower.contains("<mark>json</mark>"),
        "matches are highlighted:\n{dom}"
    );
    let (summary_tag, summary) = element(&dom, "summary").expect("summary");
    assert!(!summary_tag.contains("hidden"), "{summary_tag}");
    assert!(
        summary.contains("results") && summary.contains(" ms"),
        "{summary}"
    );
    assert!(
        summary.contains("cache "),
        "says whether the cache answered: {summary}"
    );
    let (notice_tag, _) = element(&dom, "partial-notice").expect("partial notice element");
    assert!(
        notice_tag.contains("hidden"),
        "a complete answer has no notice: {notice_tag}"
    );

    // Text that looks like markup stays text, in titles and in snippets.
    let dom = dump_dom(
        &cluster.url("/?q=zebrafish&timeout_ms=5000"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(dom.matches("<li class=\"hit\"").count(), 2, "{dom}");
    assert!(
        !dom.contains("injected-title\""),
        "a title became markup:\n{dom}"
    );
    assert!(
        !dom.contains("injected-body\""),
        "a snippet became markup:\n{dom}"
    );
    assert!(
        dom.contains("&lt;img src=x id=injected-title&gt; zebrafish &amp; json"),
        "{dom}"
    );
    assert!(dom.contains("&lt;script id=injected-body&gt;"), "{dom}");
    assert!(dom.contains("&lt;b&gt;bold&lt;/b&gt;"), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_page_names_the_missing_shard_of_a_partial_answer() {
    let cluster = TestCluster::builder()
        .shards(2)
        .replicas(2)
        .lease_ttl(Duration::from_millis(900))
        .build()
        .await;
    // Warm both shards, so that only the frozen one misses the deadline.
    let (status, body) = cluster.search("q=json&timeout_ms=5000").await;
    assert_eq!(status, 200, "{body}");
    cluster.leaf(1, 0).faults().set_hang(true);
    cluster.leaf(1, 1).faults().set_hang(true);

    let dom = dump_dom(
        &cluster.url("/?q=json&timeout_ms=200"),
        Duration::from_secs(5),
    )
    .await;
    let (tag, notice) = element(&dom, "partial-notice").expect("partial notice element");
    assert!(
        !tag.contains("hidden"),
        "the partial notice is visible: {tag}\n{dom}"
    );
    assert!(notice.starts_with("Partial answer:"), "{notice}");
    assert!(
        notice.contains("shard 1 timed out"),
        "names the shard: {notice}"
    );
    assert!(notice.contains("estimated completeness"), "{notice}");
    assert!(notice.contains("coverage"), "{notice}");
    assert!(
        !dom.contains("data-shard=\"1\"><h2"),
        "a hit from the frozen shard:\n{dom}"
    );
    // What shard 0 found is still shown. (Shard 0 is not asserted to
    // answer: on a busy machine it may miss 200 ms too.)
    if !notice.contains("shard 0") {
        assert!(
            dom.contains("<li class=\"hit\" data-id="),
            "shard 0 answered, its hits are shown:\n{dom}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_drops_a_killed_replica_within_its_lease() {
    let ttl = Duration::from_millis(900);
    let mut cluster = TestCluster::builder()
        .shards(2)
        .replicas(2)
        .lease_ttl(ttl)
        .build()
        .await;
    let killed = cluster.leaf(0, 1).advertised().to_string();
    let survivor = cluster.leaf(0, 0).advertised().to_string();
    let row = |address: &str| format!("data-address=\"{address}\"");

    let url = cluster.admin_url("/status");
    let dom = dump_dom(&url, Duration::from_millis(1500)).await;
    for address in [&killed, &survivor] {
        assert!(dom.contains(&row(address)), "{address} is listed:\n{dom}");
    }
    assert!(
        dom.contains("<tbody class=\"shard\" data-shard=\"1\""),
        "{dom}"
    );
    assert!(dom.contains("id=\"chart-latency\""), "{dom}");

    // A crash: the lease is not revoked, it expires.
    cluster.kill_leaf(0, 1);
    let killed_at = Instant::now();
    tokio::time::sleep(ttl).await;
    loop {
        let started = Instant::now();
        let dom = dump_dom(&url, Duration::from_millis(1500)).await;
        if !dom.contains(&row(&killed)) {
            assert!(
                dom.contains(&row(&survivor)),
                "the other replica stays:\n{dom}"
            );
            break;
        }
        assert!(
            started - killed_at < ttl * 5,
            "{killed} still listed {:?} after it was killed:\n{dom}",
            started - killed_at
        );
        tokio::time::sleep(ttl / 4).await;
    }

    // With no replica left, the shard says it is unavailable.
    cluster.kill_leaf(0, 0);
    let killed_at = Instant::now();
    tokio::time::sleep(ttl).await;
    loop {
        let started = Instant::now();
        let dom = dump_dom(&url, Duration::from_millis(1500)).await;
        if dom.contains("<tbody class=\"shard\" data-shard=\"0\" data-state=\"unavailable\"") {
            assert!(!dom.contains(&row(&survivor)), "{dom}");
            assert!(
                dom.contains("<tr class=\"no-replicas\" data-shard=\"0\">"),
                "{dom}"
            );
            break;
        }
        assert!(
            started - killed_at < ttl * 5,
            "shard 0 not shown unavailable {:?} after its last replica was killed:\n{dom}",
            started - killed_at
        );
        tokio::time::sleep(ttl / 4).await;
    }
}
