//! The PyTorch side of `tfmc bench`: finding or installing torch and timing shapes in one
//! long-running `python3` process running `bench/torch_ref.py`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// One shape's PyTorch measurement.
#[derive(Clone, Debug)]
pub struct TorchResult {
    /// Median time of one call, ms.
    pub median_ms: f64,
    /// Timed calls.
    pub iters: usize,
}

/// Whether `python3 -c 'import torch'` succeeds.
pub(super) fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs PyTorch with pip: the CPU wheel index first, then the default index. pip's
/// output goes to this process's stderr.
pub(super) fn install_torch() -> Result<(), String> {
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "torch"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    if pip(&["--index-url", "https://download.pytorch.org/whl/cpu"]) || pip(&[]) {
        Ok(())
    } else {
        Err("pip could not install torch (tried the CPU wheel index and the default index)".to_string())
    }
}

/// Escapes `s` as a JSON string body.
pub(super) fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The request `bench/torch_ref.py` reads.
pub(super) fn torch_request(shapes: &[&Shape], iters: usize, threads: usize) -> String {
    let items: Vec<String> = shapes
        .iter()
        .map(|s| {
            format!(
                "{{\"name\": \"{}\", \"kind\": \"{}\", \"b\": {}, \"h\": {}, \"p\": {}, \"m\": {}, \"e\": {}, \"w\": {}}}",
                json_escape(s.name),
                s.kind.torch_name(),
                s.b,
                s.h,
                s.p,
                s.m,
                s.e,
                s.w
            )
        })
        .collect();
    request_line(&items, iters, threads, BUDGET_S)
}

/// A request for `bench/torch_ref.py` from its shape items (JSON objects).
pub(super) fn request_line(items: &[String], iters: usize, threads: usize, budget_s: f64) -> String {
    format!(
        "{{\"threads\": {threads}, \"iters\": {iters}, \"budget_s\": {budget_s}, \"seed\": {SEED}, \"shapes\": [{}]}}",
        items.join(", ")
    )
}

/// A JSON scalar of a flat object.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum JsonScalar {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// Parses one line holding a flat JSON object whose values are strings or numbers (what
/// `bench/torch_ref.py` prints); `None` if it is anything else.
pub(super) fn parse_flat_object(line: &str) -> Option<BTreeMap<String, JsonScalar>> {
    fn string(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
        let mut s = String::new();
        loop {
            match it.next()? {
                '"' => return Some(s),
                '\\' => match it.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).map(|_| it.next()).collect::<Option<_>>()?;
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?).unwrap_or('\u{fffd}'));
                    }
                    c => s.push(c),
                },
                c => s.push(c),
            }
        }
    }
    let skip_ws = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
    };
    let mut it = line.trim().chars().peekable();
    let mut out = BTreeMap::new();
    if it.next()? != '{' {
        return None;
    }
    skip_ws(&mut it);
    if it.peek() == Some(&'}') {
        it.next();
        return it.next().is_none().then_some(out);
    }
    loop {
        skip_ws(&mut it);
        if it.next()? != '"' {
            return None;
        }
        let key = string(&mut it)?;
        skip_ws(&mut it);
        if it.next()? != ':' {
            return None;
        }
        skip_ws(&mut it);
        let value = if it.peek() == Some(&'"') {
            it.next();
            JsonScalar::Str(string(&mut it)?)
        } else {
            let mut num = String::new();
            while it.peek().is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.')) {
                num.extend(it.next());
            }
            match num.as_str() {
                "true" => JsonScalar::Bool(true),
                "false" => JsonScalar::Bool(false),
                "null" => JsonScalar::Null,
                _ => JsonScalar::Num(num.parse().ok()?),
            }
        };
        out.insert(key, value);
        skip_ws(&mut it);
        match it.next()? {
            ',' => {}
            '}' => return it.next().is_none().then_some(out),
            _ => return None,
        }
    }
}

/// A running `bench/torch_ref.py`: one request line per shape on its stdin, answered by
/// result lines and `{"done": true}` on its stdout.
pub(super) struct TorchSession {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// `torch.__version__`.
    pub(super) version: String,
    iters: usize,
    threads: usize,
}

/// What one shape's request to PyTorch gave.
pub(super) enum TorchOutcome {
    /// Timed.
    Ok(TorchResult),
    /// PyTorch raised on this shape (the others are unaffected).
    Failed(String),
}

impl TorchSession {
    /// Starts the script and reads its greeting (the torch version).
    pub(super) fn start(iters: usize, threads: usize) -> Result<TorchSession, String> {
        let mut child = Command::new("python3")
            .args(["-c", TORCH_SCRIPT])
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cannot talk to python3 (no pipes)".to_string());
        };
        let mut session =
            TorchSession { child, stdin: Some(stdin), stdout: std::io::BufReader::new(stdout), version: String::new(), iters, threads };
        loop {
            let obj = session.next_object()?;
            if let Some(JsonScalar::Str(v)) = obj.get("torch") {
                session.version = v.clone();
                return Ok(session);
            }
        }
    }

    /// [`TorchSession::start`], writing to `report` the line `describe(version)` when it starts
    /// or why it did not (then `None`: the table goes on without the reference column).
    pub(super) fn start_reported(
        report: &mut String,
        iters: usize,
        threads: usize,
        describe: impl FnOnce(&str) -> String,
    ) -> Option<TorchSession> {
        match TorchSession::start(iters, threads) {
            Ok(t) => {
                let _ = writeln!(report, "{}", describe(&t.version));
                Some(t)
            }
            Err(e) => {
                let _ = writeln!(report, "PyTorch reference failed to start: {e}");
                None
            }
        }
    }

    /// The next JSON object the script prints (other lines are skipped).
    fn next_object(&mut self) -> Result<BTreeMap<String, JsonScalar>, String> {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).map_err(|e| format!("reading from bench/torch_ref.py: {e}"))?;
            if n == 0 {
                return Err("bench/torch_ref.py exited early".to_string());
            }
            if let Some(obj) = parse_flat_object(&line) {
                return Ok(obj);
            }
        }
    }

    /// Times one shape.
    pub(super) fn bench(&mut self, shape: &Shape) -> Result<TorchOutcome, String> {
        self.send(shape.name, &torch_request(&[shape], self.iters, self.threads))
    }

    /// Times one shape given as its JSON item (`name` must be the item's name), with the
    /// warm-up rule's budget `budget_s`.
    pub(super) fn bench_item(&mut self, name: &str, item: &str, budget_s: f64) -> Result<TorchOutcome, String> {
        self.send(name, &request_line(&[item.to_string()], self.iters, self.threads, budget_s))
    }

    /// Sends a one-shape request and reads its result.
    fn send(&mut self, name: &str, request: &str) -> Result<TorchOutcome, String> {
        use std::io::Write;
        let stdin = self.stdin.as_mut().ok_or("bench/torch_ref.py's stdin is closed")?;
        writeln!(stdin, "{request}").and_then(|()| stdin.flush()).map_err(|e| format!("writing to bench/torch_ref.py: {e}"))?;
        let mut outcome = None;
        loop {
            let obj = self.next_object()?;
            if obj.contains_key("done") {
                return outcome.ok_or_else(|| format!("bench/torch_ref.py gave no result for {name}"));
            }
            if obj.get("name") != Some(&JsonScalar::Str(name.to_string())) {
                continue;
            }
            outcome = Some(match (obj.get("error"), obj.get("median_ms")) {
                (Some(JsonScalar::Str(e)), _) => TorchOutcome::Failed(e.clone()),
                (_, Some(JsonScalar::Num(ms))) => {
                    let n = match obj.get("iters") {
                        Some(JsonScalar::Num(n)) => n.max(0.0) as usize,
                        _ => 0,
                    };
                    TorchOutcome::Ok(TorchResult { median_ms: *ms, iters: n })
                }
                _ => TorchOutcome::Failed("malformed result line".to_string()),
            });
        }
    }
}

impl Drop for TorchSession {
    fn drop(&mut self) {
        // Closing stdin ends the script's request loop.
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}
