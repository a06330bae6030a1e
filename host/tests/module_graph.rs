//! Dependencies between wisp's modules point one way (docs/architecture.md):
//! this test reads `host/src` and fails, naming the cycle, when a module
//! refers back to one that refers to it.
//!
//! Two graphs are checked. The top-level modules (`sip`, `transport`, ...,
//! one per file or folder of `host/src`), joined by `crate::name` paths
//! (`use crate::{a::X, b::{c::Y}}` included) and `super::` paths that climb
//! out of a module. And, inside each module folder, its files, joined by
//! `super::file` and `crate::module::file` paths, and by names the folder's
//! `mod.rs` re-exports from a file (`pub use file::Name`). `mod.rs` is not
//! a node: it declares the files and is the module's face, and what it
//! defines every file of the folder may use.
//!
//! Test code (`#[cfg(test)]` items and files) is left out: a test may build
//! its input with a higher layer (parse a message to test the message
//! model) without the code it tests depending on that layer. Comments and
//! string literals are left out too.
//!
//! The reader is a tokenizer, not a Rust parser: it needs no dependency and
//! is exact for the path forms this code base uses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

/// Cycles the code still has, each as the dependency to drop to break it:
/// `(a, b)` when `a` uses `b` against the intended direction; files as
/// `module/file`. The test fails when one is gone, so the list only shrinks.
/// (The sans-IO proxy core rewrite removed the two it was made for: proxy
/// used script and tenancy.)
const KNOWN_CYCLES: &[(&str, &str)] = &[];

/// Modules allowed to use `crate::config`, the whole configuration file:
/// the server level. Everything below it owns its own section's types.
const CONFIG_USERS: &[&str] = &["server"];

#[test]
fn top_level_modules_have_no_cycles() {
    let crate_graph = read_crate(&src_dir());
    let known: Vec<(&str, &str)> = KNOWN_CYCLES
        .iter()
        .copied()
        .filter(|(from, _)| !from.contains('/'))
        .collect();
    let problems = check(&crate_graph.modules, &known);
    assert!(
        problems.is_empty(),
        "module dependencies must point one way (docs/architecture.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn files_within_a_module_have_no_cycles() {
    let crate_graph = read_crate(&src_dir());
    assert!(
        crate_graph.files.len() >= 8,
        "expected a graph per module folder, found {:?}",
        crate_graph.files.keys().collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    for (module, graph) in &crate_graph.files {
        let known: Vec<(&str, &str)> = KNOWN_CYCLES
            .iter()
            .filter_map(|(from, to)| {
                let from = from.strip_prefix(module.as_str())?.strip_prefix('/')?;
                let to = to.strip_prefix(module.as_str())?.strip_prefix('/')?;
                Some((from, to))
            })
            .collect();
        problems.extend(
            check(graph, &known)
                .into_iter()
                .map(|p| format!("in {module}/: {p}")),
        );
    }
    assert!(
        problems.is_empty(),
        "the files of a module must use each other one way:\n{}",
        problems.join("\n")
    );
}

/// The cycles of `graph` once the known ones are dropped, and the known
/// ones that are gone.
fn check(graph: &Graph, known: &[(&str, &str)]) -> Vec<String> {
    let mut rest = graph.clone();
    let mut problems = Vec::new();
    for &(from, to) in known {
        if !graph.has_edge(from, to) {
            problems.push(format!(
                "{from} no longer uses {to}: remove it from KNOWN_CYCLES"
            ));
        } else if !graph.reaches(to, from) {
            problems.push(format!(
                "{from} → {to} no longer closes a cycle: remove it from KNOWN_CYCLES"
            ));
        }
        rest.remove_edge(from, to);
    }
    problems.extend(rest.cycles().iter().map(ToString::to_string));
    problems
}

#[test]
fn only_the_server_level_reads_the_whole_config() {
    let crate_graph = read_crate(&src_dir());
    let users: Vec<String> = crate_graph
        .modules
        .edges
        .iter()
        .filter(|((from, to), _)| to == "config" && !CONFIG_USERS.contains(&from.as_str()))
        .map(|((from, _), at)| format!("{from} uses config ({at})"))
        .collect();
    assert!(
        users.is_empty(),
        "a module owns the types of its config section; only {CONFIG_USERS:?} compose \
         them:\n{}",
        users.join("\n")
    );
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A directed graph; each edge keeps where it was first seen.
#[derive(Debug, Clone, Default)]
struct Graph {
    nodes: BTreeSet<String>,
    edges: BTreeMap<(String, String), String>,
}

/// A cycle, with where each of its edges comes from.
#[derive(Debug)]
struct Cycle {
    path: Vec<String>,
    evidence: Vec<String>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cycle {}", self.path.join(" → "))?;
        for e in &self.evidence {
            write!(f, "\n    {e}")?;
        }
        Ok(())
    }
}

impl Graph {
    fn add_node(&mut self, node: &str) {
        self.nodes.insert(node.to_owned());
    }

    fn add_edge(&mut self, from: &str, to: &str, at: String) {
        self.add_node(from);
        self.add_node(to);
        self.edges
            .entry((from.to_owned(), to.to_owned()))
            .or_insert(at);
    }

    fn has_edge(&self, from: &str, to: &str) -> bool {
        self.edges.contains_key(&(from.to_owned(), to.to_owned()))
    }

    fn remove_edge(&mut self, from: &str, to: &str) {
        self.edges.remove(&(from.to_owned(), to.to_owned()));
    }

    fn successors<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.edges
            .keys()
            .filter(move |(from, _)| from == node)
            .map(|(_, to)| to.as_str())
    }

    /// The shortest path of edges from `from` to `to` (at least one edge),
    /// by breadth-first search.
    fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue: VecDeque<&str> = VecDeque::from([from]);
        while let Some(node) = queue.pop_front() {
            for next in self.successors(node) {
                if next == to {
                    let mut path = vec![to.to_owned(), node.to_owned()];
                    let mut at = node;
                    while at != from {
                        at = came_from[at];
                        path.push(at.to_owned());
                    }
                    path.reverse();
                    return Some(path);
                }
                if next != from && !came_from.contains_key(next) {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    fn reaches(&self, from: &str, to: &str) -> bool {
        self.path(from, to).is_some()
    }

    /// The cycles to show: in each group of nodes that reach each other,
    /// the shortest cycle through each node of the group (so every node
    /// of a cycle is named), each cycle once.
    fn cycles(&self) -> Vec<Cycle> {
        let mut found: Vec<Vec<String>> = Vec::new();
        for node in &self.nodes {
            let Some(mut path) = self.path(node, node) else {
                continue;
            };
            // The same cycle found from another of its nodes reads the same:
            // start it at its first node.
            path.pop();
            let first = (0..path.len()).min_by_key(|&i| &path[i]).unwrap_or(0);
            path.rotate_left(first);
            path.push(path[0].clone());
            if !found.contains(&path) {
                found.push(path);
            }
        }
        found
            .into_iter()
            .map(|path| {
                let evidence = path
                    .windows(2)
                    .map(|w| {
                        let at = &self.edges[&(w[0].clone(), w[1].clone())];
                        format!("{} uses {}: {at}", w[0], w[1])
                    })
                    .collect();
                Cycle { path, evidence }
            })
            .collect()
    }
}

/// The two graphs of the crate.
#[derive(Debug, Default)]
struct CrateGraph {
    /// Top-level modules.
    modules: Graph,
    /// The files of each module folder, by module.
    files: BTreeMap<String, Graph>,
}

/// One source file and where it sits.
struct SourceFile {
    /// Shown in messages: `sip/message.rs`.
    name: String,
    /// Its module path from the crate root: `["sip", "message"]`, or
    /// `["sip"]` for `sip/mod.rs` and `sip.rs`.
    module: Vec<String>,
    tokens: Vec<Token>,
}

fn read_crate(src: &Path) -> CrateGraph {
    let mut files = Vec::new();
    collect_files(src, src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    let modules: BTreeSet<String> = files.iter().map(|f| f.module[0].clone()).collect();

    // Per module folder: its files, minus those only compiled for tests,
    // and the names its mod.rs re-exports from them.
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut reexports: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.module.len() >= 2) {
        siblings
            .entry(f.module[0].clone())
            .or_default()
            .insert(f.module[1].clone());
    }
    for f in files.iter().filter(|f| f.module.len() == 1) {
        let scan = scan(&f.tokens);
        for name in scan.test_modules {
            test_only.insert(vec![f.module[0].clone(), name]);
        }
        let Some(own) = siblings.get(&f.module[0]) else {
            continue;
        };
        let map = reexports.entry(f.module[0].clone()).or_default();
        for r in scan.paths.iter().filter(|r| r.public_use) {
            let segments = match r.segments.first().map(String::as_str) {
                Some("self") => &r.segments[1..],
                _ => &r.segments[..],
            };
            if segments.len() >= 2 && own.contains(&segments[0]) {
                let name = r
                    .alias
                    .clone()
                    .unwrap_or_else(|| segments[segments.len() - 1].clone());
                map.insert(name, segments[0].clone());
            }
        }
    }
    for (module, own) in &mut siblings {
        own.retain(|s| !test_only.contains(&vec![module.clone(), s.clone()]));
    }

    let mut graph = CrateGraph::default();
    for f in &files {
        if f.module.len() >= 2 && test_only.contains(&f.module[..2]) {
            continue;
        }
        let top = &f.module[0];
        graph.modules.add_node(top);
        if f.module.len() >= 2 {
            graph
                .files
                .entry(top.clone())
                .or_default()
                .add_node(&f.module[1]);
        }
        for r in scan(&f.tokens).paths {
            let Some(target) = resolve(&f.module, &r) else {
                continue;
            };
            let Some(target_top) = target.first().filter(|t| modules.contains(*t)) else {
                continue;
            };
            let at = format!("{}:{} `{}`", f.name, r.line, r.segments.join("::"));
            if target_top != top {
                graph.modules.add_edge(top, target_top, at);
                continue;
            }
            // Same module: an edge between two of its files, if the path
            // names one (directly or through a re-export of mod.rs).
            let (Some(from), Some(next)) = (f.module.get(1), target.get(1)) else {
                continue;
            };
            let own = &siblings[top];
            let to = if own.contains(next) {
                Some(next.clone())
            } else {
                reexports.get(top).and_then(|m| m.get(next)).cloned()
            };
            if let Some(to) = to.filter(|to| to != from && own.contains(to)) {
                graph
                    .files
                    .entry(top.clone())
                    .or_default()
                    .add_edge(from, &to, at);
            }
        }
    }
    graph
}

fn collect_files(src: &Path, dir: &Path, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(src, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(src).expect("under src");
        let mut module: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        // The crate root and the binary are not modules of the library.
        if module == ["lib"] || module == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        out.push(SourceFile {
            name: rel.to_string_lossy().into_owned(),
            module,
            tokens: tokenize(&strip(&text)),
        });
    }
}

/// The module path a reference leads to, from the crate root; None when it
/// stays within its own file or leaves the crate.
fn resolve(module: &[String], r: &PathRef) -> Option<Vec<String>> {
    let first = r.segments.first()?;
    if first == "crate" {
        return Some(r.segments[1..].to_vec());
    }
    if first != "super" {
        return None;
    }
    let supers = r.segments.iter().take_while(|s| *s == "super").count();
    // A `super` inside an inline module climbs out of that module first.
    let ups = supers.checked_sub(r.inline_depth).filter(|&u| u > 0)?;
    let base = module.len().checked_sub(ups)?;
    let mut target = module[..base].to_vec();
    target.extend(r.segments[supers..].iter().cloned());
    Some(target)
}

/// Source text with comments and the contents of string and character
/// literals blanked out; lines stay where they were.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(' ');
                    i += 1;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !i
                .checked_sub(1)
                .is_some_and(|p| chars[p].is_alphanumeric() || chars[p] == '_')
            && raw_string_hashes(&chars[i + if c == 'b' { 2 } else { 1 }..]).is_some()
        {
            // r"..." / r#"..."# / br"...": no escapes, ends at a quote
            // followed by as many hashes.
            let start = i + if c == 'b' { 2 } else { 1 };
            let hashes = raw_string_hashes(&chars[start..]).unwrap_or(0);
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            out.extend(std::iter::repeat_n(' ', start - i + hashes + 1));
            i = start + hashes + 1;
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                out.push(blank(chars[i]));
                i += 1;
            }
            out.extend(std::iter::repeat_n(' ', closing.len()));
            i += closing.len();
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime.
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|p| i + 2 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The number of `#` between `r` and the opening quote of a raw string.
fn raw_string_hashes(after_r: &[char]) -> Option<usize> {
    let hashes = after_r.iter().take_while(|&&c| c == '#').count();
    (after_r.get(hashes) == Some(&'"')).then_some(hashes)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            tokens.push(Token {
                tok: Tok::Ident(ident),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        }
    }
    tokens
}

/// One path the code names, as written (use trees expanded).
#[derive(Debug, Clone, PartialEq)]
struct PathRef {
    segments: Vec<String>,
    line: usize,
    /// Inline `mod name { ... }` blocks around it.
    inline_depth: usize,
    /// Part of a `pub use` (a re-export).
    public_use: bool,
    /// The name it is re-exported as (`use a::B as C`).
    alias: Option<String>,
}

#[derive(Debug, Default)]
struct Scan {
    paths: Vec<PathRef>,
    /// Files declared `#[cfg(test)] mod name;`.
    test_modules: Vec<String>,
}

/// The paths in a file's tokens, outside test code.
fn scan(tokens: &[Token]) -> Scan {
    let ident = |i: usize| match tokens.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, tok: Tok| tokens.get(i).is_some_and(|t| t.tok == tok);
    let mut out = Scan::default();
    // For each open brace: whether it opened an inline module.
    let mut braces: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // #[cfg(test)]: skip the item it marks.
        if is(i, Tok::Punct('#'))
            && is(i + 1, Tok::Punct('['))
            && ident(i + 2) == Some("cfg")
            && is(i + 3, Tok::Punct('('))
            && ident(i + 4) == Some("test")
            && is(i + 5, Tok::Punct(')'))
            && is(i + 6, Tok::Punct(']'))
        {
            let start = i + 7;
            let mut j = start;
            let mut depth = 0usize;
            while j < tokens.len() {
                match tokens[j].tok {
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') if depth == 0 => break,
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(';') if depth == 0 => {
                        let words: Vec<&str> = (start..j).filter_map(ident).collect();
                        if let [.., "mod", name] = words[..] {
                            out.test_modules.push(name.to_owned());
                        }
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j + 1;
            continue;
        }
        match &tokens[i].tok {
            Tok::Punct('{') => {
                let opens_mod = i >= 2 && ident(i - 2) == Some("mod") && ident(i - 1).is_some();
                braces.push(opens_mod);
                i += 1;
                continue;
            }
            Tok::Punct('}') => {
                braces.pop();
                i += 1;
                continue;
            }
            _ => {}
        }
        let inline_depth = braces.iter().filter(|&&m| m).count();
        let after_sep = i > 0 && is(i - 1, Tok::PathSep);
        if ident(i) == Some("use") {
            // `pub use` or `pub(crate) use`.
            let public_use = (i >= 1 && ident(i - 1) == Some("pub"))
                || (i >= 4 && is(i - 1, Tok::Punct(')')) && ident(i - 4) == Some("pub"));
            let mut j = i + 1;
            if is(j, Tok::PathSep) {
                j += 1;
            }
            let mut paths = Vec::new();
            let end = use_tree(tokens, j, &mut Vec::new(), &mut paths);
            for (segments, alias, line) in paths {
                out.paths.push(PathRef {
                    segments,
                    line,
                    inline_depth,
                    public_use,
                    alias,
                });
            }
            i = end.max(i + 1);
            continue;
        }
        if !after_sep
            && matches!(ident(i), Some("crate" | "super" | "self"))
            && is(i + 1, Tok::PathSep)
        {
            // A path in an expression or type: crate::a::b or crate::a::{..}
            // (bindgen's `with` maps) — the same grammar as a use tree.
            let mut paths = Vec::new();
            let end = use_tree(tokens, i, &mut Vec::new(), &mut paths);
            for (segments, _, line) in paths {
                out.paths.push(PathRef {
                    segments,
                    line,
                    inline_depth,
                    public_use: false,
                    alias: None,
                });
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

/// Reads a use tree at `i` (`a::b`, `a::{b, c::{d, e as f}}`, `a::*`):
/// pushes each leaf path with its alias and line; returns the index after it.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) -> usize {
    let depth = prefix.len();
    let line = tokens.get(i).map_or(0, |t| t.line);
    loop {
        match tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) if s == "self" && depth > 0 && prefix.len() == depth => {
                // `a::{self, b}`: `a` itself.
                i += 1;
                break;
            }
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if tokens.get(i).is_some_and(|t| t.tok == Tok::PathSep) {
                    i += 1;
                    continue;
                }
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match tokens.get(i).map(|t| &t.tok) {
                        Some(Tok::Punct('}')) | None => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => i += 1,
                        _ => {
                            let before = i;
                            i = use_tree(tokens, i, prefix, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
                prefix.truncate(depth);
                return i;
            }
            // `a::*`, or a path that goes on into generics (`a::<T>`).
            _ => break,
        }
    }
    let mut alias = None;
    if matches!(tokens.get(i).map(|t| &t.tok), Some(Tok::Ident(s)) if s == "as") {
        if let Some(Tok::Ident(a)) = tokens.get(i + 1).map(|t| &t.tok) {
            alias = Some(a.clone());
        }
        i += 2;
    }
    if prefix.len() > depth || depth > 0 {
        out.push((prefix.clone(), alias, line));
    }
    prefix.truncate(depth);
    i
}

// The reader and the cycle finder on small inputs: the checks above can
// fail.

fn paths_of(code: &str) -> Vec<String> {
    scan(&tokenize(&strip(code)))
        .paths
        .iter()
        .map(|p| p.segments.join("::"))
        .collect()
}

fn graph(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::default();
    for (from, to) in edges {
        g.add_edge(from, to, format!("{from}.rs"));
    }
    g
}

#[test]
fn finds_and_names_a_cycle() {
    let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    let cycles = g.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].path, ["a", "b", "c", "a"]);
    let text = cycles[0].to_string();
    assert!(text.starts_with("cycle a → b → c → a"), "{text}");
    assert!(text.contains("c uses a: c.rs"), "{text}");
}

#[test]
fn two_way_dependency_is_a_cycle() {
    let g = graph(&[("message", "parse"), ("parse", "message"), ("parse", "uri")]);
    let cycles = g.cycles();
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0].path, ["message", "parse", "message"]);
}

#[test]
fn one_way_graphs_have_no_cycles() {
    // A diamond: two routes to the same module are not a cycle.
    let g = graph(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]);
    assert!(g.cycles().is_empty());
    assert!(Graph::default().cycles().is_empty());
}

#[test]
fn known_cycles_are_dropped_and_must_still_exist() {
    let g = graph(&[("proxy", "script"), ("script", "proxy"), ("script", "sip")]);
    assert!(check(&g, &[("proxy", "script")]).is_empty());
    let problems = check(&g, &[("script", "sip")]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("no longer closes a cycle"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("cycle proxy → script → proxy"),
        "{problems:?}"
    );
    let problems = check(&graph(&[("script", "proxy")]), &[("proxy", "script")]);
    assert_eq!(
        problems,
        ["proxy no longer uses script: remove it from KNOWN_CYCLES"]
    );
}

#[test]
fn separate_cycles_are_each_named() {
    let mut g = graph(&[("a", "b"), ("b", "a"), ("c", "d"), ("d", "c"), ("b", "c")]);
    assert_eq!(g.cycles().len(), 2);
    // Dropping the known dependency leaves the other cycle.
    g.remove_edge("a", "b");
    let cycles = g.cycles();
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0].path, ["c", "d", "c"]);
}

#[test]
fn reads_nested_use_trees_and_expression_paths() {
    let paths = paths_of(
        "use crate::{config::Limits, sip::{self, Message, parse::{frame, parse as p}}};\n\
         use super::*;\n\
         fn f() { let x = crate::metrics::Metrics::new(); super::super::proxy::run(x) }\n\
         pub(crate) fn g() {}",
    );
    assert_eq!(
        paths,
        [
            "crate::config::Limits",
            "crate::sip",
            "crate::sip::Message",
            "crate::sip::parse::frame",
            "crate::sip::parse::parse",
            "super",
            "crate::metrics::Metrics::new",
            "super::super::proxy::run",
        ]
    );
}

#[test]
fn ignores_comments_strings_and_test_code() {
    let paths = paths_of(
        "// use crate::a;\n/* crate::b /* nested */ crate::c */\n\
         const S: &str = \"crate::d\"; const R: &str = r#\"crate::e \"quoted\"\"#;\n\
         const C: char = '\"'; fn f<'a>(x: &'a str) {}\n\
         #[cfg(test)]\nmod tests { use crate::f; }\n\
         #[cfg(test)]\nmod corpus;\n\
         use crate::g;",
    );
    assert_eq!(paths, ["crate::g"]);
    let scan = scan(&tokenize(&strip("#[cfg(test)]\nmod corpus_tests;")));
    assert_eq!(scan.test_modules, ["corpus_tests"]);
}

#[test]
fn resolves_super_from_files_and_inline_modules() {
    let module = ["sip".to_owned(), "message".to_owned()];
    let refs = scan(&tokenize(&strip(
        "use super::uri::Uri;\nuse super::super::transport::Transport;\n\
         mod inner { use super::Text; use super::super::parse::frame; }",
    )))
    .paths;
    let targets: Vec<Option<Vec<String>>> = refs.iter().map(|r| resolve(&module, r)).collect();
    let owned = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        targets,
        [
            owned(&["sip", "uri", "Uri"]),
            owned(&["transport", "Transport"]),
            None,
            owned(&["sip", "parse", "frame"]),
        ]
    );
}
