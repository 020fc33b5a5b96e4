//! Import circles between the files of a crate (issue 14: "no import circle between files of
//! any crate"). A std-only program, compiled with plain `rustc` by `scripts/module-graph.sh`.
//!
//! For every crate root of every crate directory given (`src/lib.rs`, `src/main.rs`,
//! `src/bin/*`, `tests/*.rs`, `benches/*.rs`, `examples/*.rs`) it follows the `mod`
//! declarations to the files that define the modules, reads every path that names a module of
//! the crate (`use crate::...`, `use super::...`, `self::`, `crate::x::Y` in code, a path that
//! starts with a child module or an imported name), resolves it through `use` imports and
//! re-exports to the file that defines the module, and draws an edge between the two files.
//! A circle is a strongly connected component of more than one file.
//!
//! What is not an edge: a `mod` declaration, a `pub use` that re-exports the declaring module's
//! own descendants (a facade: `pub use world::World` in `lib.rs`; users of the re-export get an
//! edge to the defining file instead), paths inside comments and string literals. Method calls
//! are not paths, so `impl World` blocks split over child files that call each other's methods
//! are not circles; a child that names `super::World` while the parent names `child::helper`
//! is. Test modules count like any other code of their file.
//!
//! Usage: `module-graph [--enforce] [CRATE_DIR...]`. Without a directory: every crate of the
//! workspace in the current directory (the root package and `[workspace] members`). Prints the
//! circles of each crate root with the references that close them; with `--enforce`, exits 1
//! when any crate given has a circle. A directory without a crate root is an error (exit 2).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// ---- lexer -----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Rust source to tokens, without comments; string and char literals become one token each
/// (strings keep their text for `#[path = "..."]`), lifetimes and numbers are dropped.
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let n = c.len();
    let at = |j: usize| if j < n { c[j] } else { '\0' };
    while i < n {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let start_line = line;
            let (s, next) = quoted(&c, i + 1, &mut line);
            out.push(Token {
                tok: Tok::Str(s),
                line: start_line,
            });
            i = next;
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime / label ('a, 'static).
            if at(i + 1) == '\\' {
                i += 2;
                while i < n && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let prefix = matches!(word.as_str(), "r" | "b" | "br" | "c" | "cr" | "rb");
            if prefix && (at(i) == '"' || (word.contains('r') && at(i) == '#' && at(i + 1) != '['))
            {
                // A raw, byte or C string: r"..", r#".."#, b"..", br#".."#, c"..".
                let start_line = line;
                if word.contains('r') {
                    let mut hashes = 0;
                    while at(i) == '#' {
                        hashes += 1;
                        i += 1;
                    }
                    if at(i) != '"' {
                        // r#ident: a raw identifier.
                        let s = i;
                        while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                            i += 1;
                        }
                        out.push(Token {
                            tok: Tok::Ident(c[s..i].iter().collect()),
                            line,
                        });
                        continue;
                    }
                    i += 1;
                    let s = i;
                    loop {
                        if i >= n {
                            break;
                        }
                        if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                            break;
                        }
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    let text: String = c[s..i.min(n)].iter().collect();
                    i += 1 + hashes;
                    out.push(Token {
                        tok: Tok::Str(text),
                        line: start_line,
                    });
                } else {
                    let (s, next) = quoted(&c, i + 1, &mut line);
                    out.push(Token {
                        tok: Tok::Str(s),
                        line: start_line,
                    });
                    i = next;
                }
            } else if word == "b" && at(i) == '\'' {
                // A byte literal: b'x', b'\n'.
                i += 1;
                if at(i) == '\\' {
                    i += 1;
                }
                i += 1;
                while i < n && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else {
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// The text of a `"..."` literal whose body starts at `i`; returns it and the index after it.
fn quoted(c: &[char], mut i: usize, line: &mut usize) -> (String, usize) {
    let mut s = String::new();
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
        }
        if i < c.len() {
            if c[i] == '\n' {
                *line += 1;
            }
            s.push(c[i]);
        }
        i += 1;
    }
    (s, i + 1)
}

// ---- modules -----------------------------------------------------------------------------------

/// One `use` leaf: the path as written (a glob's path ends before the `*`) and the name it
/// binds (`None` for `as _` and globs).
#[derive(Debug, Clone)]
struct UseLeaf {
    path: Vec<String>,
    name: Option<String>,
    is_pub: bool,
    line: usize,
}

#[derive(Debug)]
struct Module {
    /// Path from the crate root (empty for the root).
    path: Vec<String>,
    file: usize,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    uses: Vec<UseLeaf>,
    /// Paths of two or more segments outside `use` declarations, with their line.
    refs: Vec<(Vec<String>, usize)>,
}

/// The module tree of one crate root.
#[derive(Debug, Default)]
struct Tree {
    files: Vec<PathBuf>,
    modules: Vec<Module>,
    warnings: Vec<String>,
}

impl Tree {
    fn load(root: &Path) -> Tree {
        let mut t = Tree::default();
        t.load_file(root.to_path_buf(), Vec::new(), None, true);
        t
    }

    /// Parses `file` as the module `path`; `dir_owner` files (crate roots, `mod.rs`, files
    /// loaded by `#[path]`) keep their child modules beside them, others in a folder of their
    /// own name.
    fn load_file(
        &mut self,
        file: PathBuf,
        path: Vec<String>,
        parent: Option<usize>,
        dir_owner: bool,
    ) -> Option<usize> {
        let src = match fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) => {
                self.warnings.push(format!("{}: {e}", file.display()));
                return None;
            }
        };
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let child_dir = if dir_owner || file.file_name().is_some_and(|f| f == "mod.rs") {
            dir.clone()
        } else {
            dir.join(file.file_stem().unwrap_or_default())
        };
        let file_idx = self.files.len();
        self.files.push(file);
        let top = self.new_module(path, file_idx, parent);

        let toks = lex(&src);
        // (module, brace depth inside it, folder for its `mod x;` children)
        let mut stack: Vec<(usize, usize, PathBuf)> = vec![(top, 0, child_dir)];
        let mut depth = 0usize;
        let mut pending_path: Option<String> = None;
        let mut pending_pub = false;
        let mut i = 0;
        while i < toks.len() {
            let (cur, _, cur_dir) = stack
                .last()
                .cloned()
                .expect("the file module stays on the stack");
            let t = &toks[i];
            match &t.tok {
                Tok::Punct('{') => {
                    depth += 1;
                    pending_path = None;
                }
                Tok::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if stack.len() > 1 && stack.last().is_some_and(|s| s.1 > depth) {
                        stack.pop();
                    }
                    pending_path = None;
                }
                Tok::Punct(';') => pending_path = None,
                Tok::Punct('#') => {
                    // #[path = "file.rs"]
                    if let (
                        Some(Tok::Punct('[')),
                        Some(Tok::Ident(a)),
                        Some(Tok::Punct('=')),
                        Some(Tok::Str(s)),
                    ) = (
                        toks.get(i + 1).map(|t| &t.tok),
                        toks.get(i + 2).map(|t| &t.tok),
                        toks.get(i + 3).map(|t| &t.tok),
                        toks.get(i + 4).map(|t| &t.tok),
                    ) {
                        if a == "path" {
                            pending_path = Some(s.clone());
                            i += 5;
                            continue;
                        }
                    }
                }
                Tok::Ident(w) if w == "pub" => {
                    pending_pub = true;
                    i += 1;
                    if matches!(toks.get(i).map(|t| &t.tok), Some(Tok::Punct('('))) {
                        while i < toks.len() && toks[i].tok != Tok::Punct(')') {
                            i += 1;
                        }
                        i += 1;
                    }
                    continue;
                }
                Tok::Ident(w) if w == "mod" => {
                    if let Some(Tok::Ident(name)) = toks.get(i + 1).map(|t| &t.tok) {
                        let name = name.clone();
                        let mut mpath = self.modules[cur].path.clone();
                        mpath.push(name.clone());
                        match toks.get(i + 2).map(|t| &t.tok) {
                            Some(Tok::Punct(';')) => {
                                let found = match pending_path.take() {
                                    Some(p) => Some((dir.join(p), true)),
                                    None => {
                                        let a = cur_dir.join(format!("{name}.rs"));
                                        let b = cur_dir.join(&name).join("mod.rs");
                                        if a.exists() {
                                            Some((a, false))
                                        } else if b.exists() {
                                            Some((b, true))
                                        } else {
                                            self.warnings.push(format!(
                                                "{}:{}: no file for `mod {name};`",
                                                self.files[file_idx].display(),
                                                t.line
                                            ));
                                            None
                                        }
                                    }
                                };
                                if let Some((f, owner)) = found {
                                    if let Some(m) = self.load_file(f, mpath, Some(cur), owner) {
                                        self.modules[cur].children.insert(name, m);
                                    }
                                }
                                i += 3;
                                pending_pub = false;
                                continue;
                            }
                            Some(Tok::Punct('{')) => {
                                let m = self.new_module(mpath, file_idx, Some(cur));
                                self.modules[cur].children.insert(name.clone(), m);
                                depth += 1;
                                stack.push((m, depth, cur_dir.join(&name)));
                                i += 3;
                                pending_pub = false;
                                pending_path = None;
                                continue;
                            }
                            _ => {}
                        }
                    }
                }
                Tok::Ident(w) if w == "use" => {
                    let mut leaves = Vec::new();
                    i = parse_use_tree(&toks, i + 1, Vec::new(), pending_pub, &mut leaves);
                    self.modules[cur].uses.extend(leaves);
                    pending_pub = false;
                    continue;
                }
                Tok::Ident(_) => {
                    let prev_is_sep = i > 0 && toks[i - 1].tok == Tok::PathSep;
                    let (segs, next) = read_path(&toks, i);
                    if segs.len() >= 2 && !prev_is_sep {
                        self.modules[cur].refs.push((segs, t.line));
                    }
                    pending_pub = false;
                    i = next;
                    continue;
                }
                _ => {}
            }
            pending_pub = false;
            i += 1;
        }
        Some(top)
    }

    fn new_module(&mut self, path: Vec<String>, file: usize, parent: Option<usize>) -> usize {
        self.modules.push(Module {
            path,
            file,
            parent,
            children: BTreeMap::new(),
            uses: Vec::new(),
            refs: Vec::new(),
        });
        self.modules.len() - 1
    }
}

/// `a::b::c` starting at `i` (identifiers joined by `::`); returns the segments and the
/// index after the path.
fn read_path(toks: &[Token], mut i: usize) -> (Vec<String>, usize) {
    let mut segs = Vec::new();
    while let Some(Tok::Ident(w)) = toks.get(i).map(|t| &t.tok) {
        segs.push(w.clone());
        i += 1;
        if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep)
            && matches!(toks.get(i + 1).map(|t| &t.tok), Some(Tok::Ident(_)))
        {
            i += 1;
        } else {
            break;
        }
    }
    (segs, i)
}

/// Parses one use tree at `i` (after `use`, or inside `{...}`), appending its leaves to `out`
/// with `prefix` in front; returns the index after the tree (and after a closing `;`).
fn parse_use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: Vec<String>,
    is_pub: bool,
    out: &mut Vec<UseLeaf>,
) -> usize {
    let line = toks.get(i).map_or(0, |t| t.line);
    let mut path = prefix;
    if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
        i += 1; // `use ::std::...`: an extern crate; left to resolution to ignore.
        path.push(String::from("::"));
    }
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
                if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                // A leaf, maybe renamed.
                let mut name = Some(w.clone());
                if matches!(toks.get(i).map(|t| &t.tok), Some(Tok::Ident(a)) if a == "as") {
                    name = match toks.get(i + 1).map(|t| &t.tok) {
                        Some(Tok::Ident(a)) => Some(a.clone()),
                        _ => None, // `as _`
                    };
                    i += 2;
                }
                if path.last().is_some_and(|l| l == "self") {
                    path.pop();
                    if name.as_deref() == Some("self") {
                        name = path.last().cloned();
                    }
                }
                out.push(UseLeaf {
                    path,
                    name,
                    is_pub,
                    line,
                });
                break;
            }
            Some(Tok::Punct('*')) => {
                i += 1;
                out.push(UseLeaf {
                    path,
                    name: None,
                    is_pub,
                    line,
                });
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.tok) {
                        Some(Tok::Punct('}')) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        Some(_) => {
                            let before = i;
                            i = parse_use_tree(toks, i, path.clone(), is_pub, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
                break;
            }
            _ => break,
        }
    }
    if toks.get(i).map(|t| &t.tok) == Some(&Tok::Punct(';')) {
        i += 1;
    }
    i
}

// ---- resolution --------------------------------------------------------------------------------

/// What a path names: a module, or an item defined in (or glob-imported into) a module.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Module(usize),
    Item(usize),
}

impl Tree {
    /// Resolves `segs`, written in module `m`, to the module that defines what it names;
    /// `None` for paths outside the crate (std, dependencies, locals, generics).
    fn resolve(&self, m: usize, segs: &[String], depth: usize) -> Option<Target> {
        if depth > 32 || segs.is_empty() {
            return None;
        }
        let mut cur;
        let mut k = 0;
        match segs[0].as_str() {
            "crate" => {
                cur = 0;
                k = 1;
            }
            "self" => {
                cur = m;
                k = 1;
            }
            "super" => {
                cur = m;
                while segs.get(k).is_some_and(|s| s == "super") {
                    cur = self.modules[cur].parent?;
                    k += 1;
                }
            }
            "::" | "Self" | "std" | "core" | "alloc" => return None,
            first => {
                if let Some(&c) = self.modules[m].children.get(first) {
                    cur = c;
                    k = 1;
                } else {
                    match self.resolve_name(m, first, depth)? {
                        Target::Module(t) => {
                            cur = t;
                            k = 1;
                        }
                        item => return Some(item),
                    }
                }
            }
        }
        while k < segs.len() {
            let s = &segs[k];
            if let Some(&c) = self.modules[cur].children.get(s) {
                cur = c;
            } else if let Some(t) = self.resolve_name(cur, s, depth) {
                match t {
                    Target::Module(t) => cur = t,
                    item => return Some(item),
                }
            } else {
                return Some(Target::Item(cur));
            }
            k += 1;
        }
        Some(Target::Module(cur))
    }

    /// A name brought into module `m` by one of its `use` declarations.
    fn resolve_name(&self, m: usize, name: &str, depth: usize) -> Option<Target> {
        let leaf = self.modules[m]
            .uses
            .iter()
            .find(|u| u.name.as_deref() == Some(name))?;
        self.resolve(m, &leaf.path, depth + 1)
    }

    fn is_descendant(&self, mut m: usize, ancestor: usize) -> bool {
        while let Some(p) = self.modules[m].parent {
            if p == ancestor {
                return true;
            }
            m = p;
        }
        false
    }

    /// Edges between files: (from, to) -> the first line of `from` that draws it.
    fn edges(&self) -> BTreeMap<(usize, usize), usize> {
        let mut edges = BTreeMap::new();
        for (mi, m) in self.modules.iter().enumerate() {
            let mut add = |t: Target, line: usize| {
                let (Target::Module(tm) | Target::Item(tm)) = t;
                let to = self.modules[tm].file;
                if to != m.file {
                    edges.entry((m.file, to)).or_insert(line);
                }
            };
            for u in &m.uses {
                let Some(t) = self.resolve(mi, &u.path, 0) else {
                    continue;
                };
                let (Target::Module(tm) | Target::Item(tm)) = t;
                if u.is_pub && (tm == mi || self.is_descendant(tm, mi)) {
                    continue; // a facade re-exporting its own descendants
                }
                add(t, u.line);
            }
            for (segs, line) in &m.refs {
                if let Some(t) = self.resolve(mi, segs, 0) {
                    add(t, *line);
                }
            }
        }
        edges
    }
}

/// Strongly connected components of more than one node (Tarjan), each sorted.
fn cycles(n: usize, edges: &BTreeMap<(usize, usize), usize>) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges.keys() {
        adj[a].push(b);
    }
    struct St {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[Vec<usize>], st: &mut St) {
        st.index[v] = Some(st.next);
        st.low[v] = st.next;
        st.next += 1;
        st.stack.push(v);
        st.on[v] = true;
        for &w in &adj[v] {
            match st.index[w] {
                None => {
                    visit(w, adj, st);
                    st.low[v] = st.low[v].min(st.low[w]);
                }
                Some(iw) if st.on[w] => st.low[v] = st.low[v].min(iw),
                _ => {}
            }
        }
        if Some(st.low[v]) == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = St {
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if st.index[v].is_none() {
            visit(v, &adj, &mut st);
        }
    }
    st.out.sort();
    st.out
}

// ---- crates ------------------------------------------------------------------------------------

/// One circle: its files and the references that join them ("from:line -> to").
#[derive(Debug, Clone, PartialEq)]
struct Circle {
    files: Vec<PathBuf>,
    links: Vec<String>,
}

/// The crate roots of a crate directory.
fn crate_roots(dir: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for f in ["src/lib.rs", "src/main.rs"] {
        if dir.join(f).is_file() {
            roots.push(dir.join(f));
        }
    }
    for sub in ["src/bin", "tests", "benches", "examples"] {
        let Ok(rd) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                if p.is_file() && p.extension().is_some_and(|e| e == "rs") {
                    Some(p)
                } else if p.join("main.rs").is_file() {
                    Some(p.join("main.rs"))
                } else {
                    None
                }
            })
            .collect();
        found.sort();
        roots.extend(found);
    }
    roots
}

/// Every circle of every crate root under `dir`, each reported once (a module shared by
/// several test roots), and warnings about `mod` declarations without a file.
fn crate_circles(dir: &Path) -> (Vec<Circle>, Vec<String>) {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for root in crate_roots(dir) {
        let tree = Tree::load(&root);
        warnings.extend(tree.warnings.iter().cloned());
        let edges = tree.edges();
        for comp in cycles(tree.files.len(), &edges) {
            let files: Vec<PathBuf> = comp.iter().map(|&f| tree.files[f].clone()).collect();
            if !seen.insert(files.clone()) {
                continue;
            }
            let links = edges
                .iter()
                .filter(|((a, b), _)| comp.contains(a) && comp.contains(b))
                .map(|((a, b), line)| {
                    format!(
                        "{}:{} -> {}",
                        tree.files[*a].display(),
                        line,
                        tree.files[*b].display()
                    )
                })
                .collect();
            out.push(Circle { files, links });
        }
    }
    (out, warnings)
}

/// The crate directories of the workspace whose manifest is `dir/Cargo.toml`.
fn workspace_crates(dir: &Path) -> Vec<PathBuf> {
    let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) else {
        return Vec::new();
    };
    let mut crates = Vec::new();
    if manifest.lines().any(|l| l.trim() == "[package]") {
        crates.push(dir.to_path_buf());
    }
    if let Some(start) = manifest.find("members") {
        let rest = &manifest[start..];
        if let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) {
            for m in rest[open + 1..close].split(',') {
                let m = m.trim().trim_matches('"');
                if !m.is_empty() {
                    crates.push(dir.join(m));
                }
            }
        }
    }
    crates
}

/// Reports the circles of every crate in `dirs` to `out`; returns the crates that have one
/// and the directories that are no crate (no root file: a typo such as `src` for `.`).
fn report(dirs: &[PathBuf], out: &mut impl Write) -> io::Result<(Vec<String>, Vec<String>)> {
    let mut with_circles = Vec::new();
    let mut not_crates = Vec::new();
    for dir in dirs {
        if crate_roots(dir).is_empty() {
            not_crates.push(dir.display().to_string());
            continue;
        }
        let (circles, warnings) = crate_circles(dir);
        for w in warnings {
            eprintln!("warning: {w}");
        }
        let name = dir.display();
        if circles.is_empty() {
            writeln!(out, "{name}: no import circle")?;
            continue;
        }
        writeln!(out, "{name}: {} import circle(s)", circles.len())?;
        for (k, c) in circles.iter().enumerate() {
            let files: Vec<String> = c.files.iter().map(|f| f.display().to_string()).collect();
            writeln!(
                out,
                "  circle {}: {} files: {}",
                k + 1,
                files.len(),
                files.join(" ")
            )?;
            for l in &c.links {
                writeln!(out, "    {l}")?;
            }
        }
        with_circles.push(name.to_string());
    }
    Ok((with_circles, not_crates))
}

fn main() -> ExitCode {
    let mut enforce = false;
    let mut dirs = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--enforce" => enforce = true,
            "-h" | "--help" => {
                println!("usage: module-graph [--enforce] [CRATE_DIR...]  (default: every crate of ./Cargo.toml)");
                return ExitCode::SUCCESS;
            }
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    if dirs.is_empty() {
        dirs = workspace_crates(Path::new("."));
    }
    let (failed, not_crates) = match report(&dirs, &mut io::stdout().lock()) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !not_crates.is_empty() {
        eprintln!(
            "error: no crate root (src/lib.rs, src/main.rs, src/bin, tests, benches, examples) in {}",
            not_crates.join(", ")
        );
        return ExitCode::from(2);
    }
    if enforce && !failed.is_empty() {
        eprintln!(
            "error: import circles in {} (scripts/module-graph.sh)",
            failed.join(", ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(file!())
            .parent()
            .expect("the source has a folder")
            .join("fixtures")
            .join(name)
    }

    fn names(c: &Circle) -> Vec<String> {
        c.files
            .iter()
            .map(|f| {
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn a_circle_is_found_with_the_references_that_close_it() {
        let (circles, warnings) = crate_circles(&fixture("circle"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(circles.len(), 2, "{circles:#?}");
        // a.rs -> b.rs by `use crate::b::Beta`, b.rs -> a.rs by a path in code.
        assert_eq!(names(&circles[0]), ["a.rs", "b.rs"]);
        assert_eq!(circles[0].links.len(), 2);
        // A parent naming its child's item while the child names the parent's.
        assert_eq!(names(&circles[1]), ["parent.rs", "child.rs"]);
    }

    #[test]
    fn facades_children_comments_and_tests_are_no_circle() {
        let (circles, warnings) = crate_circles(&fixture("clean"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(circles.is_empty(), "{circles:#?}");
    }

    #[test]
    fn the_report_names_the_crates_with_circles() {
        let mut out = Vec::new();
        let dirs = [
            fixture("clean"),
            fixture("circle"),
            fixture("no-such-crate"),
        ];
        let (failed, not_crates) = report(&dirs, &mut out).expect("in memory");
        assert_eq!(failed, [fixture("circle").display().to_string()]);
        assert_eq!(not_crates, [fixture("no-such-crate").display().to_string()]);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("clean: no import circle"), "{text}");
        assert!(text.contains("circle: 2 import circle(s)"), "{text}");
        assert!(text.contains("a.rs:1 -> "), "{text}");
    }

    #[test]
    fn the_lexer_drops_comments_strings_and_lifetimes() {
        let toks = lex("/* crate::a /* nested */ */ x // crate::b\n'a: loop {} let s = r#\"crate::c\"#; 'x' b'y' \"q\\\"\"");
        let idents: Vec<&Tok> = toks
            .iter()
            .map(|t| &t.tok)
            .filter(|t| matches!(t, Tok::Ident(_)))
            .collect();
        assert_eq!(
            idents,
            [
                &Tok::Ident("x".into()),
                &Tok::Ident("loop".into()),
                &Tok::Ident("let".into()),
                &Tok::Ident("s".into())
            ]
        );
        assert_eq!(toks.last().map(|t| &t.tok), Some(&Tok::Str("q\"".into())));
    }

    #[test]
    fn use_trees_expand_groups_self_and_renames() {
        let toks = lex("use crate::{a::{self, B as C}, d::*, e::F};");
        let mut out = Vec::new();
        parse_use_tree(&toks, 1, Vec::new(), false, &mut out);
        let got: Vec<(String, Option<String>)> = out
            .iter()
            .map(|u| (u.path.join("::"), u.name.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("crate::a".into(), Some("a".into())),
                ("crate::a::B".into(), Some("C".into())),
                ("crate::d".into(), None),
                ("crate::e::F".into(), Some("F".into())),
            ]
        );
    }
}
