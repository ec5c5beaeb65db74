use super::*;
use crate::testutil::sample;

fn get(api: &Api, target: &str) -> Reply {
    api.handle("GET", target)
}

fn json_of(reply: &Reply) -> Value {
    assert_eq!(reply.content_type, "application/json");
    serde_json::from_slice(&reply.body).expect("a JSON body")
}

/// The error message of a reply with `status`.
fn error_of(reply: &Reply, status: u16) -> String {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    json_of(reply)["error"]
        .as_str()
        .expect("an error message")
        .to_string()
}

/// A decoded binary frame: its header and named buffers.
fn frame(reply: &Reply) -> (Value, BTreeMap<String, Vec<u8>>) {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type, "application/octet-stream");
    let b = &reply.body;
    assert_eq!(&b[..4], FRAME_MAGIC);
    let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&b[8..8 + len]).unwrap();
    let data = &b[(8 + len).div_ceil(4) * 4..];
    let buffers = header["buffers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, at)| {
            let (offset, bytes) = (
                at[0].as_u64().unwrap() as usize,
                at[1].as_u64().unwrap() as usize,
            );
            assert_eq!(offset % 4, 0);
            (name.clone(), data[offset..offset + bytes].to_vec())
        })
        .collect();
    (header, buffers)
}

/// No absolute path of this machine in a client-facing body.
fn assert_no_absolute_path(body: &[u8], tmp: &Path) {
    let text = String::from_utf8_lossy(body);
    assert!(!text.contains(&*tmp.to_string_lossy()), "{text}");
    if let Ok(canonical) = tmp.canonicalize() {
        assert!(!text.contains(&*canonical.to_string_lossy()), "{text}");
    }
    for word in text.split(|c: char| c.is_whitespace() || "\"'`(:".contains(c)) {
        assert!(
            !word.starts_with('/') || word.starts_with("/api/"),
            "`{word}` in {text}"
        );
    }
}

#[test]
fn meta_describes_the_dataset() {
    let (_tmp, dir) = sample();
    let api = Api::open(&dir);
    let meta = json_of(&get(&api, "/api/meta"));
    assert_eq!(meta["dataset"], "ds");
    assert_eq!(meta["model"]["id"], "sample");
    assert_eq!(meta["model"]["architecture"], "bert");
    assert_eq!(meta["num_tokens"], 12);
    assert_eq!(meta["heads"].as_array().unwrap().len(), 4);
    assert_eq!(meta["heads_with_attention"], 4);
    assert_eq!(meta["sequences"].as_array().unwrap().len(), 3);
    assert_eq!(meta["sequences"][1]["preview"], "w1_1 w1_2");
    assert_eq!(
        meta["projections"],
        json!([{ "method": "pca", "dims": 3, "heads": 4 }, { "method": "tsne", "dims": 2, "heads": 4 }])
    );
    assert_eq!(
        meta["encodings"].as_array().unwrap().len(),
        4,
        "text: no patch encodings"
    );
    assert_eq!(meta["vision"], false);
}

#[test]
fn tokens_are_column_wise() {
    let (_tmp, dir) = sample();
    let t = json_of(&get(&Api::open(&dir), "/api/tokens"));
    assert_eq!(t["text"].as_array().unwrap().len(), 12);
    assert_eq!(t["text"][0], "[CLS]");
    assert_eq!(t["text"][6], "w1_1");
    assert_eq!(t["seq"][6], 1);
    assert_eq!(t["pos"][6], 1);
    assert_eq!(t["special"][5], true);
    assert_eq!(t["patch"][0], Value::Null);
}

#[test]
fn matrix_frame_holds_two_points_per_token_per_head() {
    let (_tmp, dir) = sample();
    let api = Api::open(&dir);
    for (target, dims) in [
        ("/api/matrix?method=tsne&dims=2", 2),
        ("/api/matrix?method=pca&dims=3&encoding=norm", 3),
    ] {
        let (header, buffers) = frame(&get(&api, target));
        let cells = header["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 4);
        assert_eq!(header["dims"], dims);
        let mut offset = 0;
        for cell in cells {
            assert_eq!(
                cell["count"],
                2 * 12,
                "{target}: a query and a key point per token"
            );
            assert_eq!(cell["offset"], offset);
            offset += 24;
        }
        assert_eq!(header["points"], 4 * 24);
        assert_eq!(
            buffers["positions"].len(),
            4 * 24 * 3 * 2,
            "u16 x 3 per point"
        );
        assert_eq!(buffers["colors"].len(), 4 * 24 * 4, "RGBA per point");
    }
    // A search counts its matches.
    let (header, _) = frame(&get(
        &api,
        "/api/matrix?method=tsne&search=w1_&mode=substring",
    ));
    assert_eq!(header["matched_tokens"], 2, "w1_1 and w1_2");
}

#[test]
fn single_frame_has_every_point_with_flags() {
    let (_tmp, dir) = sample();
    let api = Api::open(&dir);
    let (header, buffers) = frame(&get(
        &api,
        "/api/single?method=tsne&dims=2&head=L1H0&token=6&role=key",
    ));
    assert_eq!(header["count"], 24);
    assert_eq!(header["head"], json!({ "layer": 1, "head": 0 }));
    assert_eq!(buffers["sizes"].len(), 24 * 4);
    assert_eq!(buffers["tokens"].len(), 24 * 4);
    let flags = &buffers["flags"];
    assert_eq!(flags.iter().filter(|f| *f & FLAG_KEY != 0).count(), 12);
    // Token 6 is in sequence 1 (3 tokens): its queries and keys are flagged.
    assert_eq!(
        flags
            .iter()
            .filter(|f| *f & FLAG_IN_SELECTED_SEQUENCE != 0)
            .count(),
        6
    );
    assert_eq!(header["selected"]["role"], "key");
}

#[test]
fn sentence_views() {
    let (_tmp, dir) = sample();
    let api = Api::open(&dir);
    let v = json_of(&get(&api, "/api/sentence?method=tsne&head=L0H1&seq=0"));
    assert_eq!(v["seq_id"], 0);
    assert_eq!(v["tokens"].as_array().unwrap().len(), 5);
    assert!(!v["edges"].as_array().unwrap().is_empty());
    let agg = json_of(&get(
        &api,
        "/api/sentence?method=tsne&head=L0H1&aggregate=1&hide_special=1",
    ));
    assert_eq!(agg["seq_id"], Value::Null);
    let hidden = json_of(&get(
        &api,
        "/api/sentence?method=tsne&head=L0H1&seq=0&hidden=1%2C2",
    ));
    assert_ne!(
        hidden["edges"], v["edges"],
        "hidden tokens change the edges"
    );
    let sim = json_of(&get(&api, "/api/similarity?method=tsne"));
    assert!(sim.is_object());
}

#[test]
fn bad_parameters_are_400_naming_the_parameter() {
    let (tmp, dir) = sample();
    let api = Api::open(&dir);
    for (target, name) in [
        ("/api/matrix", "method"),
        ("/api/matrix?method=nope", "method"),
        ("/api/matrix?method=tsne&dims=4", "dims"),
        ("/api/matrix?method=tsne&dims=two", "dims"),
        ("/api/matrix?method=tsne&encoding=plaid", "encoding"),
        ("/api/matrix?method=tsne&search=a&mode=fuzzy", "mode"),
        (
            "/api/single?method=tsne&head=L0H0&token=1&role=both",
            "role",
        ),
        ("/api/single?method=tsne&head=layer0", "head"),
        ("/api/sentence?method=tsne", "head"),
        ("/api/sentence?method=tsne&head=L0H0", "seq"),
        (
            "/api/sentence?method=tsne&head=L0H0&seq=0&hidden=x",
            "hidden",
        ),
        ("/api/picture", "seq"),
    ] {
        let message = error_of(&get(&api, target), 400);
        assert!(
            message.starts_with(&format!("{name}: ")),
            "{target}: {message}"
        );
        assert_no_absolute_path(message.as_bytes(), tmp.path());
    }
}

#[test]
fn unknown_heads_sequences_and_projections_are_400() {
    let (tmp, dir) = sample();
    let api = Api::open(&dir);
    let message = error_of(&get(&api, "/api/single?method=tsne&dims=2&head=L9H9"), 400);
    assert!(message.contains("L9H9"), "{message}");
    let message = error_of(
        &get(&api, "/api/sentence?method=tsne&head=L0H0&seq=99"),
        400,
    );
    assert!(message.contains("99"), "{message}");
    let message = error_of(&get(&api, "/api/matrix?method=umap"), 400);
    assert!(
        message.contains("umap") && message.contains("ds"),
        "{message}"
    );
    assert_no_absolute_path(message.as_bytes(), tmp.path());
}

#[test]
fn page_paths_methods_and_unknown_paths() {
    let (_tmp, dir) = sample();
    let api = Api::open(&dir);
    let page = get(&api, "/");
    assert_eq!(
        (page.status, page.content_type),
        (200, "text/html; charset=utf-8")
    );
    assert_eq!(page.body, crate::INDEX_HTML.as_bytes());
    assert_eq!(
        get(&api, "/style.css?v=1").body,
        crate::STYLE_CSS.as_bytes()
    );
    assert_eq!(api.handle("HEAD", "/app.js").status, 200);
    let post = api.handle("POST", "/api/meta");
    assert_eq!(post.status, 405);
    assert!(post.content_type.starts_with("text/plain"));
    assert_eq!(
        error_of(&get(&api, "/api/unknown"), 404),
        "not found: /api/unknown"
    );
    assert_eq!(get(&api, "/nothing").status, 404);
    let files = get(&api, "/files/meta.json");
    assert_eq!(
        (files.status, files.content_type),
        (200, "application/json")
    );
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(
        json_of(&files),
        on_disk,
        "no path to cut: the metadata as stored"
    );
    assert_eq!(
        files.headers(),
        [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff")
        ]
    );
}

#[test]
fn errors_show_no_absolute_path() {
    let (tmp, dir) = sample();
    let api = Api::open(&dir);
    // Views load before the damage; the token table goes afterwards.
    assert_eq!(get(&api, "/api/meta").status, 200);
    std::fs::remove_file(dir.join("tokens.parquet")).unwrap();
    let reply = get(&api, "/api/meta");
    let message = error_of(&reply, 400);
    assert!(
        message.starts_with("tokens.parquet: "),
        "named relative to the dataset: {message}"
    );
    assert_no_absolute_path(&reply.body, tmp.path());
    assert_eq!(
        get(&api, "/api/tokens").status,
        400,
        "still answering after a failed request"
    );
    let reply = get(&api, "/api/picture?seq=0");
    let message = error_of(&reply, 400);
    assert!(
        message.contains("images") && message.contains("00000.png"),
        "{message}"
    );
    assert_no_absolute_path(&reply.body, tmp.path());

    // The same through a relative path, and a dataset that cannot be opened at all.
    let missing = Api::open(tmp.path().join("gone"));
    let reply = get(&missing, "/api/meta");
    let message = error_of(&reply, 503);
    assert!(
        message.starts_with("cannot open dataset gone: meta.json: "),
        "{message}"
    );
    assert_no_absolute_path(&reply.body, tmp.path());
    assert!(matches!(missing.dataset(), Err(ViewerError::Open { .. })));
    assert!(
        missing
            .dataset()
            .unwrap_err()
            .to_string()
            .contains(&*tmp.path().to_string_lossy()),
        "local message is full"
    );
    assert_eq!(get(&missing, "/").status, 200, "the page is still served");
}

#[test]
fn dataset_files_stay_inside_the_dataset() {
    let (tmp, dir) = sample();
    std::fs::write(tmp.path().join("secret.txt"), "not yours").unwrap();
    let api = Api::open(&dir);
    for target in [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/heads/../../secret.txt",
        "/files/heads/%2E%2E/%2E%2E/secret.txt",
        "/files//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
        "/files/..%5Csecret.txt",
        "/files/meta.json%00",
        "/../secret.txt",
        "/files/",
        "/files/heads",
        "/app.js/../../secret.txt",
    ] {
        let reply = get(&api, target);
        assert_eq!(reply.status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&reply.body).contains("not yours"));
    }
    assert!(dataset_file(&dir, "meta.json").is_some());
    assert!(dataset_file(&dir, "tokens.parquet").is_some());
    // Only the data files: no lock file, nothing else put beside them.
    std::fs::write(dir.join(".lock-run"), "").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    assert!(dataset_file(&dir, ".lock-run").is_none());
    assert!(dataset_file(&dir, "notes.txt").is_none());
    assert!(dataset_file(&dir, "heads/L0H0/../../meta.json").is_none());
    assert!(
        dataset_file(&dir, "heads").is_none(),
        "directories are not files"
    );
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_dataset_are_not_followed() {
    let (tmp, dir) = sample();
    std::fs::write(tmp.path().join("secret.txt"), "not yours").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), dir.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), dir.join("outside")).unwrap();
    std::os::unix::fs::symlink(dir.join("tokens.parquet"), dir.join("inside.parquet")).unwrap();
    let api = Api::open(&dir);
    for target in ["/files/link.txt", "/files/outside/secret.txt"] {
        let reply = get(&api, target);
        assert_eq!(reply.status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&reply.body).contains("not yours"));
    }
    assert!(dataset_file(&dir, "link.txt").is_none());
    assert_eq!(
        get(&api, "/files/inside.parquet").status,
        200,
        "a link within the dataset is fine"
    );
}

#[test]
fn query_parsing_and_cache_keys() {
    let p = parse_query("b=x%20y+z&a=%2e%2E&flag&=v&c=%zz");
    assert_eq!(p["a"], "..");
    assert_eq!(p["b"], "x y z");
    assert_eq!(p["flag"], "");
    assert_eq!(p["c"], "%zz");
    assert_eq!(
        cache_key("sentence", &p),
        "sentence?=v&a=..&b=x%20y%20z&c=%25zz&flag="
    );
}

#[test]
fn meta_json_is_served_without_absolute_paths() {
    let (tmp, dir) = sample();
    let path = dir.join("meta.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let params = meta["run"]["params"].as_object_mut().unwrap();
    params.insert("queries".into(), json!("/home/someone/runs/q.npy"));
    params.insert(
        "input_file:/home/someone/runs/k.npy".into(),
        json!("12 bytes"),
    );
    meta["run"]["corpus"] = json!("/home/someone/corpus.txt");
    std::fs::write(&path, meta.to_string()).unwrap();
    let api = Api::open(&dir);
    let reply = get(&api, "/files/meta.json");
    assert_eq!(reply.status, 200);
    assert_no_absolute_path(&reply.body, tmp.path());
    let served = json_of(&reply);
    assert!(!String::from_utf8_lossy(&reply.body).contains("/home/someone"));
    assert_eq!(served["run"]["params"]["queries"], "q.npy");
    assert_eq!(served["run"]["params"]["input_file:k.npy"], "12 bytes");
    assert_eq!(served["run"]["corpus"], "corpus.txt");
    assert_eq!(served["model"], meta["model"], "the rest as stored");
}

#[test]
fn long_targets_are_414_and_nothing_long_is_echoed() {
    let (_tmp, dir) = sample();
    let api = Api::open(&dir);
    let long = format!("/{}", "a".repeat(crate::error::MAX_TARGET_BYTES));
    let reply = get(&api, &long);
    assert_eq!(reply.status, 414);
    assert!(
        reply.body.len() < 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    // Under the limit: a 404 (or a bad parameter) echoes at most a short part of the request.
    for target in [
        format!("/{}", "b".repeat(8000)),
        format!("/api/single?method=tsne&dims={}", "9".repeat(8000)),
    ] {
        let reply = get(&api, &target);
        assert!(matches!(reply.status, 400 | 404), "{}", reply.status);
        assert!(reply.body.len() < 400, "{} bytes", reply.body.len());
    }
}
