//! Headers the gateway adds to a forwarded request, kept beside the request's own map until
//! the request is written (`X-Forwarded-*`, `X-Real-IP`, `X-Request-Id`, the identity
//! headers). The plain exchange writes them after the map's headers; hyper's client gets them
//! inserted into the map. Inserting into the map costs a hash and a probe each (about 330
//! instructions, with the map's growth on top): most of the rewrite's cost.
//!
//! Only a name the request's map does not hold goes here (the rewrite checks; the client's
//! copy of a name the gateway always sets is removed before): the upstream sees one value.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The added headers, in the order they were set.
#[derive(Debug, Default)]
pub struct Overlay(Vec<(HeaderName, HeaderValue)>);

impl Overlay {
    pub fn with_capacity(n: usize) -> Overlay {
        Overlay(Vec::with_capacity(n))
    }

    /// Adds `name`, which the request's map does not hold.
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push((name, value));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// Moves the headers into `map` (hyper's client: it writes the map alone). Inserted, so
    /// a name in both would still be sent once, with the gateway's value.
    pub fn apply(self, map: &mut HeaderMap) {
        for (name, value) in self.0 {
            map.insert(name, value);
        }
    }

    /// True when no added name is also in `map` (the invariant the rewrite keeps).
    pub fn disjoint(&self, map: &HeaderMap) -> bool {
        self.0.iter().all(|(name, _)| !map.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_replaces_and_keeps_order() {
        let mut o = Overlay::with_capacity(2);
        o.push(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("1"),
        );
        o.push(
            HeaderName::from_static("x-b"),
            HeaderValue::from_static("2"),
        );
        let names: Vec<&str> = o.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b"]);
        let mut map = HeaderMap::new();
        map.insert("x-a", HeaderValue::from_static("client"));
        assert!(!o.disjoint(&map));
        o.apply(&mut map);
        assert_eq!(map.get_all("x-a").iter().count(), 1);
        assert_eq!(map["x-a"], "1");
        assert_eq!(map["x-b"], "2");
    }
}
