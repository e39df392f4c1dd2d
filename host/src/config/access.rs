//! Reading and writing one setting through its key, whatever its type.
//!
//! An `Access` pairs a field of `Settings` with the rule for its values, so
//! `get`, `set` and the file check share one description of each key. It
//! never reports errors itself: a refused value comes back as `false` and
//! the caller, who knows the key, words the error.

use super::Settings;
use super::rules::{IntRange, ListRule, TextRule};
use super::sections::Isolation;
use super::values::{ByteSize, join_list, parse_bool, parse_list};

/// One field of `Settings`, reachable for reading and for writing.
#[derive(Debug)]
pub(super) struct Field<T: 'static> {
    pub(super) read: fn(&Settings) -> &T,
    pub(super) write: fn(&mut Settings) -> &mut T,
}

/// How a key's value is stored and which values it accepts.
#[derive(Debug)]
pub(super) enum Access {
    Bool(Field<bool>),
    U32(Field<u32>, IntRange),
    U64(Field<u64>, IntRange),
    /// A size, and the smallest one allowed.
    Size(Field<ByteSize>, ByteSize),
    Text(Field<String>, TextRule),
    List(Field<Vec<String>>, ListRule),
    Isolation(Field<Isolation>),
}

impl Access {
    /// The short type shown by `config --list`.
    pub(super) fn kind(&self) -> String {
        match self {
            Access::Bool(_) => "bool".to_string(),
            Access::U32(_, range) | Access::U64(_, range) => range.kind(),
            Access::Size(..) => "size".to_string(),
            Access::Text(..) => "string".to_string(),
            Access::List(..) => "list".to_string(),
            Access::Isolation(_) => "fresh|reuse".to_string(),
        }
    }

    /// What a valid value looks like, to finish "expected ...".
    pub(super) fn expected(&self) -> String {
        match self {
            Access::Bool(_) => "true or false (or yes/no, on/off, 1/0)".to_string(),
            Access::U32(_, range) | Access::U64(_, range) => range.expected(),
            Access::Size(_, min) => format!(
                "a size such as 512m (a whole number with an optional k, m or g suffix) \
                 of at least {min}"
            ),
            Access::Text(_, rule) => rule.expected(),
            Access::List(_, rule) => rule.expected(),
            Access::Isolation(_) => "fresh or reuse".to_string(),
        }
    }

    /// The value as the user would type it back.
    pub(super) fn read(&self, settings: &Settings) -> String {
        match self {
            Access::Bool(field) => (field.read)(settings).to_string(),
            Access::U32(field, _) => (field.read)(settings).to_string(),
            Access::U64(field, _) => (field.read)(settings).to_string(),
            Access::Size(field, _) => (field.read)(settings).to_string(),
            Access::Text(field, _) => (field.read)(settings).clone(),
            Access::List(field, _) => join_list((field.read)(settings)),
            Access::Isolation(field) => (field.read)(settings).as_str().to_string(),
        }
    }

    /// Whether the value currently held obeys the key's rule.
    pub(super) fn holds_valid(&self, settings: &Settings) -> bool {
        match self {
            Access::Bool(_) | Access::Isolation(_) => true,
            Access::U32(field, range) => range.contains(u64::from(*(field.read)(settings))),
            Access::U64(field, range) => range.contains(*(field.read)(settings)),
            Access::Size(field, min) => (field.read)(settings) >= min,
            Access::Text(field, rule) => rule.accepts((field.read)(settings)),
            Access::List(field, rule) => rule.accepts((field.read)(settings)),
        }
    }

    /// Parses `text` and stores it if the rule allows it. Returns false and
    /// leaves `settings` untouched otherwise.
    pub(super) fn write(&self, settings: &mut Settings, text: &str) -> bool {
        match self {
            Access::Bool(field) => store(field, settings, parse_bool(text)),
            Access::U32(field, range) => {
                let value = range.parse(text).and_then(|n| u32::try_from(n).ok());
                store(field, settings, value)
            }
            Access::U64(field, range) => store(field, settings, range.parse(text)),
            Access::Size(field, min) => {
                let value = text.parse::<ByteSize>().ok().filter(|size| size >= min);
                store(field, settings, value)
            }
            Access::Text(field, rule) => {
                let value = rule.accepts(text).then(|| text.to_string());
                store(field, settings, value)
            }
            Access::List(field, rule) => {
                let value = Some(parse_list(text)).filter(|items| rule.accepts(items));
                store(field, settings, value)
            }
            Access::Isolation(field) => store(field, settings, Isolation::from_name(text)),
        }
    }
}

fn store<T>(field: &Field<T>, settings: &mut Settings, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            *(field.write)(settings) = value;
            true
        }
        None => false,
    }
}
