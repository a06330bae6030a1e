//! The Via header value (RFC 3261 §20.42, §25.1; received/rport per
//! RFC 3581 and RFC 5118 §4.5).

use std::fmt;

use super::error::ParseError;
use super::syntax::{find_param, is_token, is_ws, parse_params, trim_ws, write_params};
use super::uri::{parse_hostport, Host};
use super::values::first_comma;

/// One Via value: `SIP/2.0/transport sent-by;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport as written ("UDP", "TCP", "TLS", "SCTP", "WS", ...).
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    /// Parameters as written (quoted values keep their quotes).
    pub params: Vec<(String, Option<String>)>,
}

fn bad(why: &str) -> ParseError {
    ParseError::bad_header("Via", why)
}

impl Via {
    /// Parses one Via value (not a comma-separated list). Whitespace is
    /// allowed around "/" ":" ";" "=" as the ABNF's SLASH, COLON, SEMI and
    /// EQUAL say (RFC 4475 wsinv).
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        let value = trim_ws(value);
        if first_comma(value).is_some() {
            return Err(bad("several values"));
        }
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport
        let mut rest = value;
        let mut fields = [""; 3];
        for (i, field) in fields.iter_mut().enumerate() {
            rest = rest.trim_start_matches([' ', '\t']);
            let len = rest
                .bytes()
                .take_while(|&c| super::syntax::is_token_char(c))
                .count();
            *field = &rest[..len];
            rest = rest[len..].trim_start_matches([' ', '\t']);
            if i < 2 {
                rest = rest
                    .strip_prefix('/')
                    .ok_or_else(|| bad("bad sent-protocol"))?;
            }
        }
        let [name, version, transport] = fields;
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || !is_token(transport) {
            return Err(bad("bad sent-protocol"));
        }
        // sent-by = host [ COLON port ]; runs to the first ";" (hosts hold
        // no ";"), with the whitespace of COLON removed.
        let end = rest.find(';').unwrap_or(rest.len());
        let sent_by = trim_ws(&rest[..end]);
        if sent_by.is_empty() {
            return Err(bad("missing sent-by"));
        }
        // Drop the whitespace COLON allows; any other whitespace stays and
        // makes the host or port invalid.
        let colon = match sent_by.rfind(']') {
            Some(close) => sent_by[close..].find(':').map(|i| i + close),
            None => sent_by.find(':'),
        };
        let joined;
        let sent_by = match colon {
            Some(i) => {
                let (host, port) = (trim_ws(&sent_by[..i]), trim_ws(&sent_by[i + 1..]));
                if host.len() + 1 + port.len() == sent_by.len() {
                    sent_by
                } else {
                    joined = format!("{host}:{port}");
                    joined.as_str()
                }
            }
            None => sent_by,
        };
        if sent_by.bytes().any(is_ws) {
            return Err(bad("bad sent-by"));
        }
        let (host, port) = parse_hostport(sent_by).map_err(|e| bad(e.reason()))?;
        let params = parse_params(&rest[end..], "Via")?;
        let via = Via {
            transport: transport.to_string(),
            host,
            port,
            params,
        };
        via.check_params()?;
        Ok(via)
    }

    /// Values of the parameters whose syntax is fixed by the RFCs.
    fn check_params(&self) -> Result<(), ParseError> {
        if let Some(r) = self.param("received") {
            // via-received = IPv4address / IPv6reference (RFC 5118 §4.5: the
            // unbracketed IPv6 form of RFC 3261's ABNF is not accepted).
            let ok = r.is_some_and(|r| {
                (r.starts_with('[') || !r.contains(':'))
                    && matches!(Host::parse(r), Ok(Host::V4(_) | Host::V6(_)))
            });
            if !ok {
                return Err(bad("bad received parameter"));
            }
        }
        if let Some(Some(p)) = self.param("rport") {
            if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err() {
                return Err(bad("bad rport parameter"));
            }
        }
        if let Some(b) = self.param("branch") {
            if !b.is_some_and(is_token) {
                return Err(bad("bad branch parameter"));
            }
        }
        Ok(())
    }

    fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// Whether the `alias` parameter (RFC 5923) is there.
    pub fn alias(&self) -> bool {
        self.param("alias").is_some()
    }

    /// The received parameter (as written; an IPv6 address keeps brackets).
    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// The rport parameter (RFC 3581): `Some(None)` when present without a
    /// value, `Some(Some(port))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// Sets a parameter, replacing the value of one of the same name
    /// (case-insensitive) or appending it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_string);
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(p) => p.1 = value,
            None => self.params.push((name.to_string(), value)),
        }
    }

    /// Whether the branch starts with the RFC 3261 magic cookie (§8.1.1.7).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::V4("192.0.2.1".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert_eq!(v.rport(), Some(None));
        assert!(v.has_rfc3261_branch());
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport"
        );

        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, Host::Name("spindle.example.com".into()));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255]").unwrap();
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        let v = Via::parse("SIP/2.0/TCP host:5060 ;received=192.0.2.200").unwrap();
        assert_eq!(v.received(), Some("192.0.2.200"));
    }

    #[test]
    fn rejects() {
        for s in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ;branch=x",
            "SIP/7.0/UDP host",
            "SIP/2.0 host",
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255",
            "SIP/2.0/UDP host;received=host.example.com",
            "SIP/2.0/UDP host;rport=99999",
            "SIP/2.0/UDP host:port",
            "SIP/2.0/UDP a b",
            "SIP/2.0/UDP a, SIP/2.0/UDP b",
            "SIP/2.0/UDP host;branch=",
        ] {
            assert!(Via::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn set_param() {
        let mut v = Via::parse("SIP/2.0/UDP h;rport;branch=z9hG4bK1").unwrap();
        v.set_param("received", Some("192.0.2.9"));
        v.set_param("RPORT", Some("5062"));
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP h;rport=5062;branch=z9hG4bK1;received=192.0.2.9"
        );
    }
}
