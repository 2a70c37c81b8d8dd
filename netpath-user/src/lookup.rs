//! What a sandbox or network argument names: a full ID, a name, or a unique
//! prefix of an ID, tried in that order as Docker's daemon does
//! (`GetContainer`, `FindNetwork`), with Docker's own error words, so that
//! `netpath rm -f $(netpath ps -q)` and scripts that grep Docker's errors
//! work unchanged. Every command resolves its arguments here, once.
use std::fmt;

/// The kind of object an argument names, for the error's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Container,
    Network,
    /// Either (`inspect` looks for both).
    Object,
}

/// Why an argument names no single object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// An empty argument (Docker's client refuses it before asking).
    Empty(Kind),
    /// Neither an ID, a name nor an ID prefix of anything.
    NoSuch(Kind, String),
    /// A prefix of several IDs (and nobody's name).
    Ambiguous { kind: Kind, query: String, matches: usize },
}

impl LookupError {
    /// How Docker's command line prints this error: the client's own
    /// `Error: No such container: X` for a missing container, the daemon's
    /// words behind `Error response from daemon: ` for the rest.
    pub fn docker_line(&self) -> String {
        match self {
            LookupError::NoSuch(Kind::Container | Kind::Object, _) | LookupError::Empty(_) => format!("Error: {self}"),
            _ => format!("Error response from daemon: {self}"),
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Empty(Kind::Container) => write!(f, "invalid container name or ID: value is empty"),
            LookupError::Empty(Kind::Network) => write!(f, "invalid network name or ID: value is empty"),
            LookupError::Empty(Kind::Object) => write!(f, "invalid object name or ID: value is empty"),
            LookupError::NoSuch(Kind::Container, q) => write!(f, "No such container: {q}"),
            LookupError::NoSuch(Kind::Network, q) => write!(f, "network {q} not found"),
            LookupError::NoSuch(Kind::Object, q) => write!(f, "No such object: {q}"),
            LookupError::Ambiguous { kind: Kind::Container | Kind::Object, query, .. } => {
                write!(f, "multiple IDs found with provided prefix: {query}")
            }
            LookupError::Ambiguous { kind: Kind::Network, query, matches } => {
                write!(f, "network {query} is ambiguous ({matches} matches found based on ID prefix)")
            }
        }
    }
}

impl std::error::Error for LookupError {}

/// The one item of `items` that `query` names: the item whose full ID it
/// is, else the item of that name (a container name may carry Docker's
/// leading `/`), else the only item whose ID starts with it.
pub fn resolve<'a, T: 'a, I>(
    kind: Kind,
    query: &str,
    items: I,
    name: impl Fn(&T) -> &str,
    id: impl Fn(&T) -> &str,
) -> Result<&'a T, LookupError>
where
    I: IntoIterator<Item = &'a T>,
    I::IntoIter: Clone,
{
    if query.is_empty() {
        return Err(LookupError::Empty(kind));
    }
    let items = items.into_iter();
    if let Some(found) = items.clone().find(|t| id(*t) == query) {
        return Ok(found);
    }
    let as_name = match kind {
        Kind::Container | Kind::Object => query.strip_prefix('/').unwrap_or(query),
        Kind::Network => query,
    };
    if let Some(found) = items.clone().find(|t| name(*t) == as_name) {
        return Ok(found);
    }
    let mut by_prefix = items.filter(|t| id(*t).starts_with(query));
    match (by_prefix.next(), by_prefix.count()) {
        (Some(found), 0) => Ok(found),
        (Some(_), more) => Err(LookupError::Ambiguous { kind, query: query.to_string(), matches: more + 1 }),
        (None, _) => Err(LookupError::NoSuch(kind, query.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(kind: Kind, q: &str, items: &'a [(&'a str, &'a str)]) -> Result<&'a str, LookupError> {
        resolve(kind, q, items, |t| t.0, |t| t.1).map(|t| t.0)
    }

    #[test]
    fn full_id_then_name_then_unique_prefix() {
        let items = [("web", "abc123"), ("db", "abd456"), ("abc", "ffff00")];
        assert_eq!(find(Kind::Container, "abc123", &items), Ok("web"));
        // A name wins over an ID prefix it also is.
        assert_eq!(find(Kind::Container, "abc", &items), Ok("abc"));
        assert_eq!(find(Kind::Container, "/db", &items), Ok("db"));
        assert_eq!(find(Kind::Container, "abd", &items), Ok("db"));
        assert_eq!(find(Kind::Container, "ff", &items), Ok("abc"));
        assert_eq!(
            find(Kind::Container, "ab", &items),
            Err(LookupError::Ambiguous { kind: Kind::Container, query: "ab".into(), matches: 2 })
        );
        assert_eq!(find(Kind::Container, "zz", &items), Err(LookupError::NoSuch(Kind::Container, "zz".into())));
        assert_eq!(find(Kind::Container, "", &items), Err(LookupError::Empty(Kind::Container)));
        // Networks have no leading-slash names.
        assert!(find(Kind::Network, "/db", &items).is_err());
    }

    #[test]
    fn errors_read_as_docker_prints_them() {
        let missing = LookupError::NoSuch(Kind::Container, "x".into());
        assert_eq!(missing.docker_line(), "Error: No such container: x");
        let ambiguous = LookupError::Ambiguous { kind: Kind::Container, query: "a".into(), matches: 2 };
        assert_eq!(ambiguous.docker_line(), "Error response from daemon: multiple IDs found with provided prefix: a");
        let net = LookupError::Ambiguous { kind: Kind::Network, query: "a".into(), matches: 3 };
        assert_eq!(net.to_string(), "network a is ambiguous (3 matches found based on ID prefix)");
        assert_eq!(LookupError::NoSuch(Kind::Network, "n".into()).to_string(), "network n not found");
    }
}
