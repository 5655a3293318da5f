//! The TOML document the reader (`raw.rs`) walks: tables, arrays and scalars, with the byte
//! span of every key and value.
//!
//! Two builders make the same tree. [`parse`] first tries the **quick builder**, which builds
//! the tree straight from `toml_parser`'s events for the TOML that configuration files are
//! made of (`[a.b]` headers, `key = value` with one key, strings, integers, booleans, arrays,
//! inline tables). On anything else (a dotted key, `[[array]]`, a float or a date, a key or
//! table defined twice, any syntax error) it gives up, and the text goes through toml's own
//! parse (`toml::de::DeTable`), converted into the same tree: that path also reports every
//! syntax error. The quick builder exists because toml's tree of a 10,000-instance file costs
//! about three times the events it is built from (BENCHMARKS.md, "Planner").
//!
//! **Invariant: the quick builder accepts a text only where toml accepts it, and builds the
//! same tree, spans included** (property-tested on generated documents,
//! `tests::the_quick_builder_never_reads_a_document_otherwise_than_toml`, and checked on every
//! TOML file of the repository's examples and fixtures). When in doubt it gives up: giving up
//! costs time, never a wrong reading.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::parser::EventReceiver;
use toml_parser::{ErrorSink, ParseError, Raw, Source, Span};

pub type Key<'i> = Spanned<Cow<'i, str>>;
pub type Item<'i> = Spanned<Value<'i>>;

/// A table: its entries sorted by key (as toml's), each key once.
#[derive(Debug, Default)]
pub struct Table<'i> {
    entries: Vec<(Key<'i>, Item<'i>)>,
    /// While the quick builder builds it, an empty table stands for its node; 0 after.
    node: u32,
}

impl<'i> Table<'i> {
    pub fn get(&self, key: &str) -> Option<&Item<'i>> {
        // Most tables hold a few keys: comparing lengths first spares most byte comparisons.
        let i = if self.entries.len() <= 16 {
            self.entries.iter().position(|(k, _)| k.get_ref() == key)
        } else {
            self.entries
                .binary_search_by(|(k, _)| k.get_ref().as_ref().cmp(key))
                .ok()
        };
        i.map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Item<'i>> {
        let i = self.entries.iter().position(|(k, _)| k.get_ref() == key)?;
        Some(&mut self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key<'i>, &Item<'i>)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Key<'i>, &mut Item<'i>)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }
}

#[derive(Debug)]
pub enum Value<'i> {
    String(Cow<'i, str>),
    Integer(Integer<'i>),
    /// Only the type of a float or a date is read (configuration has neither).
    Float,
    Boolean(bool),
    Datetime,
    Array(Vec<Item<'i>>),
    Table(Table<'i>),
}

impl Value<'_> {
    /// The type's name in messages, as toml names it.
    pub fn type_str(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

/// An integer as written: its digits (underscores kept, sign included) and radix.
#[derive(Debug)]
pub struct Integer<'i> {
    digits: Cow<'i, str>,
    radix: u32,
}

impl Integer<'_> {
    pub fn as_str(&self) -> &str {
        &self.digits
    }
    pub fn radix(&self) -> u32 {
        self.radix
    }
}

/// Parses `src`: the root table (span `0..0`, as toml's), or every syntax error toml reports.
pub fn parse(src: &str) -> Result<Table<'_>, Vec<toml::de::Error>> {
    if let Some(t) = quick(src) {
        return Ok(t);
    }
    let (root, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(from_toml_table(root.into_inner()))
}

// ---------------------------------------------------------------------------------------------
// toml's tree, converted.

fn from_toml_table(t: DeTable<'_>) -> Table<'_> {
    // A BTreeMap (toml without `preserve_order`): already sorted by key.
    Table {
        entries: t.into_iter().map(|(k, v)| (k, from_toml(v))).collect(),
        node: 0,
    }
}

fn from_toml(v: Spanned<DeValue<'_>>) -> Item<'_> {
    let span = v.span();
    let value = match v.into_inner() {
        DeValue::String(s) => Value::String(s),
        DeValue::Integer(i) => Value::Integer(Integer {
            digits: Cow::Owned(i.as_str().to_owned()),
            radix: i.radix(),
        }),
        DeValue::Float(_) => Value::Float,
        DeValue::Boolean(b) => Value::Boolean(b),
        DeValue::Datetime(_) => Value::Datetime,
        DeValue::Array(a) => Value::Array(a.into_iter().map(from_toml).collect()),
        DeValue::Table(t) => Value::Table(from_toml_table(t)),
    };
    Spanned::new(span, value)
}

// ---------------------------------------------------------------------------------------------
// The quick builder.

/// toml refuses deeper nesting (its `RecursionGuard` limit) and longer header paths.
const DEPTH_LIMIT: usize = 80;
const PATH_LIMIT: usize = 64;
/// Tables with more entries than this get a hash index while built (`instances`).
const INDEX_FROM: usize = 16;

fn quick(src: &str) -> Option<Table<'_>> {
    let source = Source::new(src);
    let tokens = source.lex().into_vec();
    let mut b = Quick {
        src,
        nodes: vec![Node {
            entries: Vec::new(),
            indexed: false,
            origin: Origin::Header,
            at: (0, 0),
        }],
        indexes: HashMap::new(),
        current: 0,
        header: None,
        header_keys: Vec::new(),
        path: Vec::new(),
        key: None,
        frames: Vec::new(),
        failed: false,
    };
    let mut errors = Failed(false);
    toml_parser::parser::parse_document(&tokens, &mut b, &mut errors);
    if b.failed || errors.0 || b.header.is_some() || b.key.is_some() || !b.frames.is_empty() {
        return None;
    }
    Some(b.finish())
}

struct Failed(bool);

impl ErrorSink for Failed {
    fn report_error(&mut self, _error: ParseError) {
        self.0 = true;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Origin {
    /// Created as a step of a header's path (`a` of `[a.b]`): a header may still define it.
    Implicit,
    /// Defined by its own header (or the root).
    Header,
    Inline,
}

/// A table while it is built: its entries in the order read, a table among them an empty
/// [`Table`] that names its node.
struct Node<'i> {
    entries: Vec<(Key<'i>, Item<'i>)>,
    /// Whether `Quick::indexes` has its keys (past `INDEX_FROM` entries).
    indexed: bool,
    origin: Origin,
    /// Where the table sits: its parent's node and its entry there (the root: `(0, 0)`).
    at: (u32, u32),
}

/// The empty table that stands for node `id` in its parent while the tree is built.
fn stand_in<'i>(id: usize) -> Value<'i> {
    Value::Table(Table {
        entries: Vec::new(),
        node: id as u32,
    })
}

/// The node an entry's value stands for, when it is a table.
fn node_of(item: &Item<'_>) -> Option<usize> {
    match item.get_ref() {
        Value::Table(t) => Some(t.node as usize),
        _ => None,
    }
}

enum Frame<'i> {
    Array {
        start: usize,
        items: Vec<Item<'i>>,
    },
    Inline {
        start: usize,
        node: usize,
        stand_in: Value<'i>,
        key: Option<Key<'i>>,
    },
}

struct Quick<'i> {
    src: &'i str,
    nodes: Vec<Node<'i>>,
    /// Key to entry, of the nodes with more than `INDEX_FROM` entries (`instances`).
    indexes: HashMap<usize, HashMap<Cow<'i, str>, usize>>,
    /// The table that `key = value` lines go into: the last header's.
    current: usize,
    /// Where the header being read starts, and its keys so far.
    header: Option<usize>,
    header_keys: Vec<Key<'i>>,
    /// The last header's path: its keys and their tables' nodes.
    path: Vec<(Cow<'i, str>, usize)>,
    /// The key of the `key = value` being read at the top of a table.
    key: Option<Key<'i>>,
    frames: Vec<Frame<'i>>,
    failed: bool,
}

/// The decoded text of a bare key, or of a one-line string without escapes: the token
/// itself or its inside, which is what `toml_parser`'s decoders return for them after walking
/// them character by character (`tests::plain_text_is_what_the_decoder_returns`). `None`:
/// anything else, for the decoder.
fn plain(raw: &str, encoding: Option<Encoding>, key: bool) -> Option<&str> {
    match encoding {
        None if key && !raw.is_empty() => raw
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            .then_some(raw),
        Some(Encoding::BasicString) => {
            let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
            (inner.bytes())
                .all(|c| c == b'\t' || (c >= 0x20 && c != b'"' && c != b'\\' && c != 0x7f))
                .then_some(inner)
        }
        Some(Encoding::LiteralString) => {
            let inner = raw.strip_prefix('\'')?.strip_suffix('\'')?;
            (inner.bytes())
                .all(|c| c == b'\t' || (c >= 0x20 && c != b'\'' && c != 0x7f))
                .then_some(inner)
        }
        _ => None,
    }
}

fn range(span: Span) -> Range<usize> {
    span.start()..span.end()
}

impl<'i> Quick<'i> {
    fn raw(&self, span: Span, encoding: Option<Encoding>) -> Option<Raw<'i>> {
        let s = self.src.get(range(span))?;
        Some(Raw::new_unchecked(s, encoding, span))
    }

    fn find(&self, node: usize, key: &str) -> Option<usize> {
        let n = &self.nodes[node];
        if n.indexed {
            self.indexes[&node].get(key).copied()
        } else {
            n.entries.iter().position(|(k, _)| k.get_ref() == key)
        }
    }

    /// Adds an entry; a key already there (toml's "duplicate key") gives up.
    fn insert(&mut self, node: usize, key: Key<'i>, value: Item<'i>) {
        if self.find(node, key.get_ref()).is_some() {
            self.failed = true;
            return;
        }
        if let Some(child) = node_of(&value) {
            self.nodes[child].at = (node as u32, self.nodes[node].entries.len() as u32);
        }
        let n = &mut self.nodes[node];
        n.entries.push((key, value));
        let last = n.entries.len() - 1;
        if n.indexed {
            let k = n.entries[last].0.get_ref().clone();
            self.indexes.entry(node).or_default().insert(k, last);
        } else if last == INDEX_FROM {
            n.indexed = true;
            let keys = n.entries.iter().enumerate();
            let index = keys.map(|(i, (k, _))| (k.get_ref().clone(), i)).collect();
            self.indexes.insert(node, index);
        }
    }

    /// As toml's `RecursionGuard`: no deeper than `DEPTH_LIMIT` arrays and inline tables (the
    /// parser then does not descend).
    fn within_depth(&mut self) -> bool {
        let ok = self.frames.len() <= DEPTH_LIMIT;
        self.failed |= !ok;
        ok
    }

    /// A new table's node, and the empty table that stands for it.
    fn new_node(&mut self, origin: Origin) -> (usize, Value<'i>) {
        let id = self.nodes.len();
        self.nodes.push(Node {
            entries: Vec::new(),
            indexed: false,
            origin,
            at: (0, 0),
        });
        (id, stand_in(id))
    }

    /// `[a.b.c]`: `a` and `b` found or created as implicit tables, `c` created, or defined
    /// when a longer header created it implicitly. Anything else is for toml to report.
    fn header(&mut self, start: usize, end: usize) {
        let mut keys = std::mem::take(&mut self.header_keys);
        self.define(&mut keys, start..end);
        keys.clear();
        self.header_keys = keys;
    }

    fn define(&mut self, keys: &mut Vec<Key<'i>>, span: Range<usize>) {
        let Some(last) = keys.pop() else {
            self.failed = true;
            return;
        };
        if keys.len() >= PATH_LIMIT {
            self.failed = true;
            return;
        }
        // The steps this header shares with the previous one are not looked up again (each
        // `[instances.<name>.backups.<key>]` shares three).
        let same = (self.path.iter().zip(keys.iter()))
            .take_while(|((p, _), k)| p == k.get_ref())
            .count();
        self.path.truncate(same);
        let mut node = self.path.last().map_or(0, |(_, n)| *n);
        for k in keys.drain(same..) {
            let name = k.get_ref().clone();
            node = match self.find(node, k.get_ref()) {
                Some(i) => match node_of(&self.nodes[node].entries[i].1) {
                    Some(t) if self.nodes[t].origin != Origin::Inline => t,
                    _ => {
                        self.failed = true;
                        return;
                    }
                },
                None => {
                    let (t, stand_in) = self.new_node(Origin::Implicit);
                    let value = Spanned::new(k.span(), stand_in);
                    self.insert(node, k, value);
                    t
                }
            };
            self.path.push((name, node));
        }
        let name = last.get_ref().clone();
        match self.find(node, last.get_ref()) {
            Some(i) => {
                let t = match node_of(&self.nodes[node].entries[i].1) {
                    Some(t) if self.nodes[t].origin == Origin::Implicit => t,
                    _ => {
                        self.failed = true;
                        return;
                    }
                };
                // As toml: the entry now carries the defining header's key and span.
                self.nodes[t].origin = Origin::Header;
                self.nodes[node].entries[i] = (last, Spanned::new(span, stand_in(t)));
                self.current = t;
            }
            None => {
                let (t, stand_in) = self.new_node(Origin::Header);
                self.insert(node, last, Spanned::new(span, stand_in));
                self.current = t;
            }
        }
        self.path.push((name, self.current));
    }

    /// A value read: into the open array, the open inline table, or the current table.
    fn value(&mut self, span: Range<usize>, value: Value<'i>) {
        let item = Spanned::new(span, value);
        match self.frames.last_mut() {
            // Inline tables in arrays: not in configuration files.
            Some(Frame::Array { .. }) if node_of(&item).is_some() => self.failed = true,
            Some(Frame::Array { items, .. }) => items.push(item),
            Some(Frame::Inline { node, key, .. }) => {
                let node = *node;
                match key.take() {
                    Some(k) => self.insert(node, k, item),
                    None => self.failed = true,
                }
            }
            None => match self.key.take() {
                Some(k) => self.insert(self.current, k, item),
                None => self.failed = true,
            },
        }
    }

    /// The finished tree: each table's entries sorted as toml's and moved into the stand-in
    /// in its parent, the last node first (a table's node comes after its parent's).
    fn finish(mut self) -> Table<'i> {
        for n in (1..self.nodes.len()).rev() {
            let mut entries = std::mem::take(&mut self.nodes[n].entries);
            entries.sort_unstable_by(|(a, _), (b, _)| a.get_ref().cmp(b.get_ref()));
            let (p, i) = self.nodes[n].at;
            match self.nodes[p as usize].entries[i as usize].1.get_mut() {
                Value::Table(t) => *t = Table { entries, node: 0 },
                _ => unreachable!("a node's entry is its stand-in"),
            }
        }
        let mut entries = std::mem::take(&mut self.nodes[0].entries);
        entries.sort_unstable_by(|(a, _), (b, _)| a.get_ref().cmp(b.get_ref()));
        Table { entries, node: 0 }
    }
}

impl EventReceiver for Quick<'_> {
    fn std_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        if self.header.is_some() || self.key.is_some() || !self.frames.is_empty() {
            self.failed = true;
        }
        self.header = Some(span.start());
    }

    fn std_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        match self.header.take() {
            Some(start) if !self.failed => self.header(start, span.end()),
            _ => self.failed = true,
        }
    }

    fn array_table_open(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.failed = true;
    }

    fn array_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.failed = true;
    }

    fn inline_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) -> bool {
        let (node, stand_in) = self.new_node(Origin::Inline);
        self.frames.push(Frame::Inline {
            start: span.start(),
            node,
            stand_in,
            key: None,
        });
        self.within_depth()
    }

    fn inline_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        match self.frames.pop() {
            Some(Frame::Inline {
                start,
                stand_in,
                key: None,
                ..
            }) => self.value(start..span.end(), stand_in),
            _ => self.failed = true,
        }
    }

    fn array_open(&mut self, span: Span, _error: &mut dyn ErrorSink) -> bool {
        self.frames.push(Frame::Array {
            start: span.start(),
            items: Vec::new(),
        });
        self.within_depth()
    }

    fn array_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        match self.frames.pop() {
            Some(Frame::Array { start, items }) => {
                self.value(start..span.end(), Value::Array(items))
            }
            _ => self.failed = true,
        }
    }

    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        let Some(raw) = self.raw(span, encoding) else {
            self.failed = true;
            return;
        };
        let decoded = match plain(raw.as_str(), encoding, true) {
            Some(text) => Cow::Borrowed(text),
            None => {
                let mut decoded = Cow::Borrowed("");
                raw.decode_key(&mut decoded, error);
                decoded
            }
        };
        let key = Spanned::new(range(span), decoded);
        // A second key before the value is a dotted key: toml's to read.
        let slot = match (self.header, self.frames.last_mut()) {
            (Some(_), _) => {
                self.header_keys.push(key);
                return;
            }
            (None, Some(Frame::Inline { key: slot, .. })) => slot,
            (None, Some(Frame::Array { .. })) => {
                self.failed = true;
                return;
            }
            (None, None) => &mut self.key,
        };
        if slot.is_some() {
            self.failed = true;
        } else {
            *slot = Some(key);
        }
    }

    fn key_sep(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        if self.header.is_none() {
            self.failed = true;
        }
    }

    fn scalar(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        let Some(raw) = self.raw(span, encoding) else {
            self.failed = true;
            return;
        };
        if let Some(text) = plain(raw.as_str(), encoding, false) {
            self.value(range(span), Value::String(Cow::Borrowed(text)));
            return;
        }
        let mut decoded = Cow::Borrowed("");
        let value = match raw.decode_scalar(&mut decoded, error) {
            ScalarKind::String => Value::String(decoded),
            ScalarKind::Boolean(b) => Value::Boolean(b),
            ScalarKind::Integer(radix) => Value::Integer(Integer {
                digits: decoded,
                radix: radix.value(),
            }),
            ScalarKind::Float | ScalarKind::DateTime => {
                self.failed = true;
                return;
            }
        };
        self.value(range(span), value);
    }

    fn error(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.failed = true;
    }

    // What toml's `ValidateWhitespace` checks (control characters in comments, a lone CR).
    fn comment(&mut self, span: Span, error: &mut dyn ErrorSink) {
        match self.raw(span, None) {
            Some(raw) => raw.decode_comment(error),
            None => self.failed = true,
        }
    }

    fn newline(&mut self, span: Span, error: &mut dyn ErrorSink) {
        match self.raw(span, None) {
            Some(raw) => raw.decode_newline(error),
            None => self.failed = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    /// toml's tree of `src`, converted, as text (spans included), or `None` when toml refuses it.
    fn toml_tree(src: &str) -> Option<String> {
        let (root, errors) = DeTable::parse_recoverable(src);
        errors
            .is_empty()
            .then(|| format!("{:?}", from_toml_table(root.into_inner())))
    }

    /// Whether the quick builder took `src`; when it did, its tree must be toml's.
    fn agrees(src: &str) -> bool {
        match quick(src) {
            Some(t) => {
                let expected = toml_tree(src);
                assert!(
                    expected.is_some(),
                    "the quick builder took what toml refuses:\n{src}"
                );
                assert_eq!(
                    Some(format!("{t:?}")),
                    expected,
                    "different trees of:\n{src}"
                );
                true
            }
            None => false,
        }
    }

    fn toml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("a folder of the repository") {
            let p = e.expect("an entry").path();
            if p.is_dir() {
                toml_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }

    #[test]
    fn the_quick_builder_agrees_with_toml_on_every_toml_file_of_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        toml_files(&root.join("examples"), &mut files);
        toml_files(&root.join("tests/fixtures"), &mut files);
        assert!(files.len() > 200, "{} files", files.len());
        let mut taken = 0;
        for f in &files {
            // An invalid fixture may not even be UTF-8: the reader refuses it before TOML.
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            if agrees(&text) {
                taken += 1;
            }
        }
        // The invalid fixtures are mostly refused; the valid configurations are all taken.
        assert!(taken * 2 > files.len(), "{taken} of {} taken", files.len());
        let quickstart = std::fs::read_to_string(root.join("examples/quickstart/backplan.toml"))
            .expect("the quickstart");
        assert!(
            agrees(&quickstart),
            "the quickstart is read by the quick builder"
        );
    }

    #[test]
    fn the_quick_builder_takes_the_common_forms_and_a_header_defining_an_implicit_table() {
        for src in [
            "",
            "# only a comment\n",
            "a = 1\nb = \"x\"\n[t]\nc = true\n",
            "[instances.app]\ntype = \"production\"\nsource = { kind = \"directory\", path = '/srv/app' }\n\n[instances.app.backups.b1]\nlabel = \"x\\ty \\u00e9\"\n",
            "[a.b]\nx = 1\n[a]\ny = 2\n",
            "[a.b.c]\n[a.b]\n[a]\n",
            "[\"quoted key\".'lit']\nk = [1, [2, \"3\"], []]\n",
            "v = { a = { b = 1 }, c = [] }\n",
            "n = [0x1f, 0o17, 0b101, 1_000, -5, +7]\n",
            "s = \"\"\"\nmulti\nline\"\"\"\nl = '''\nraw'''\n",
            "a = 1\r\n[t]\r\nb = 'x' # crlf\r\n",
            "\u{feff}a = 1\n",
        ] {
            assert!(agrees(src), "not taken:\n{src}");
        }
        // The 17th entry of a table starts its index: keys after it are still found.
        let mut many: String = (0..40).map(|i| format!("k{i} = {i}\n")).collect();
        assert!(agrees(&many));
        many.push_str("k3 = 0\n");
        assert!(
            quick(&many).is_none(),
            "a duplicate found through the index"
        );
    }

    #[test]
    fn the_quick_builder_gives_up_on_what_toml_refuses_and_on_what_it_does_not_read() {
        let refused = [
            "a = 1\na = 2\n",
            "[t]\n[t]\n",
            "[a.b]\n[a]\nb = 1\n",
            "[a]\nx = 1\n[a.x]\n",
            "[a]\nx = {}\n[a.x]\n",
            "[a]\nx = {}\n[a.x.y]\n",
            "v = { a = 1, a = 2 }\n",
            "s = \"bad \\q escape\"\n",
            "n = 01\n",
            "a = \n",
            "[a\n",
            "a = 1 b = 2\n",
            "a = 1 # a bell \u{7} in a comment\n",
            "a = 1\rb = 2\n",
        ];
        for src in refused {
            assert!(quick(src).is_none(), "taken:\n{src}");
            assert!(toml_tree(src).is_none(), "toml takes:\n{src}");
            assert!(parse(src).is_err(), "{src}");
        }
        let not_read = [
            "a.b = 1\n",
            "[[x]]\nk = 1\n",
            "f = 1.5\n",
            "d = 2024-01-01\n",
            "v = [{ a = 1 }]\n",
            "v = { a.b = 1 }\n",
        ];
        for src in not_read {
            assert!(quick(src).is_none(), "taken:\n{src}");
            let tree = parse(src).expect("toml reads it");
            assert_eq!(Some(format!("{tree:?}")), toml_tree(src), "{src}");
        }
        // Deeper than toml allows.
        let deep = format!("v = {}1{}\n", "[".repeat(100), "]".repeat(100));
        assert!(quick(&deep).is_none());
        assert!(toml_tree(&deep).is_none(), "toml refuses it too");
        let deep = format!("v = {}1{}\n", "{ a = ".repeat(100), " }".repeat(100));
        assert!(quick(&deep).is_none());
        let long = format!("[{}]\n", vec!["k"; 100].join("."));
        assert!(quick(&long).is_none());
        assert_eq!(toml_tree(&long).is_some(), parse(&long).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn plain_text_is_what_the_decoder_returns(
            text in prop::collection::vec(
                prop::sample::select(vec!["a", "Z", "0", "-", "_", " ", "\t", "\"", "'", "\\", "n", "\u{1}", "\u{7f}", "é", "\u{1f600}", "."]),
                0..8,
            ),
            form in 0..3usize,
        ) {
            let text: String = text.concat();
            let (raw, encoding, key) = match form {
                0 => (text.clone(), None, true),
                1 => (format!("\"{text}\""), Some(Encoding::BasicString), false),
                _ => (format!("'{text}'"), Some(Encoding::LiteralString), false),
            };
            if let Some(plain) = plain(&raw, encoding, key) {
                let span = Span::new_unchecked(0, raw.len());
                let raw = Raw::new_unchecked(&raw, encoding, span);
                let mut decoded = Cow::Borrowed("");
                let mut errors = Failed(false);
                if key {
                    raw.decode_key(&mut decoded, &mut errors);
                } else {
                    let kind = raw.decode_scalar(&mut decoded, &mut errors);
                    prop_assert!(matches!(kind, ScalarKind::String));
                }
                prop_assert!(!errors.0, "the decoder refuses {:?}", raw.as_str());
                prop_assert_eq!(plain, decoded.as_ref());
            }
        }
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a",
            "b",
            "\"a\"",
            "'b'",
            "\"c d\"",
            "\"\\u0061\"",
            "e",
        ])
        .prop_map(str::to_string)
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(key(), 1..4).prop_map(|k| k.join("."))
    }

    /// Scalars; `tame` leaves out what the quick builder gives up on.
    fn scalar(tame: bool) -> impl Strategy<Value = String> {
        let mut s = vec![
            "1",
            "+2",
            "-3",
            "0x1f",
            "1_000",
            "true",
            "false",
            "\"s\"",
            "\"esc \\\" \\n \\u00e9\"",
            "'lit'",
            "\"\"\"ml\nx\"\"\"",
            "\"\"",
        ];
        if !tame {
            s.extend(["01", "1.5", "2024-01-01", "\"bad \\q\""]);
        }
        prop::sample::select(s).prop_map(str::to_string)
    }

    fn value(tame: bool) -> impl Strategy<Value = String> {
        scalar(tame).prop_recursive(3, 12, 4, move |inner| {
            let k = if tame { key().boxed() } else { path().boxed() };
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec((k, inner), 0..4).prop_map(|kv| {
                    let kv: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", kv.join(", "))
                }),
            ]
        })
    }

    fn line(tame: bool) -> impl Strategy<Value = String> {
        let odd = if tame { 0 } else { 1 };
        prop_oneof![
            3 => (key(), value(tame)).prop_map(|(k, v)| format!("{k} = {v}")),
            odd => (path(), value(tame)).prop_map(|(k, v)| format!("{k} = {v}")),
            2 => path().prop_map(|p| format!("[{p}]")),
            odd => path().prop_map(|p| format!("[[{p}]]")),
            1 => Just("# a comment".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_quick_builder_never_reads_a_document_otherwise_than_toml(
            lines in prop_oneof![
                prop::collection::vec(line(false), 0..12),
                prop::collection::vec(line(true), 0..12),
            ]
        ) {
            let src = lines.join("\n");
            agrees(&src);
            // Whatever the builder, `parse` reads as toml does.
            match parse(&src) {
                Ok(t) => prop_assert_eq!(Some(format!("{t:?}")), toml_tree(&src)),
                Err(_) => prop_assert!(toml_tree(&src).is_none()),
            }
        }
    }
}
