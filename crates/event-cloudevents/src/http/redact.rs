//! Endpoint URLs as errors, logs and `Debug` show them.

/// What stands in for a hidden part of a URL.
const HIDDEN: &str = "***";

/// `url` with its secrets hidden, for errors, logs, dead-letter reasons and
/// `Debug` output: the whole userinfo (`TOKEN@`, `user:password@`) becomes
/// `***@`, the value of every query parameter `***` (its name is kept; a
/// parameter without `=`, which may be a bare token, is `***` whole) and a
/// fragment `***`. The scheme, host, port and path are kept, so the path
/// must not carry a secret (put tokens in the userinfo, the query or a
/// header).
///
/// A URL that parses is shown as parsed (normalised, as it is sent: a
/// lowercase scheme and host, `/` for an empty path). Text that does not
/// parse as a URL with a host (named by the error that refuses it) is
/// redacted more coarsely, since where its userinfo ends is a guess:
/// everything after the scheme up to its last `@` is hidden (all of it when
/// a `?` or `#` comes before that `@`), then query values and the fragment
/// as above.
///
/// ```
/// use event_cloudevents::http::redact_url;
///
/// assert_eq!(
///     redact_url("https://ghp_T0KEN@hooks.example.com:8443/hook?access_token=abc&v=2#frag"),
///     "https://***@hooks.example.com:8443/hook?access_token=***&v=***#***"
/// );
/// assert_eq!(redact_url("https://user:pass@[::1]/events"), "https://***@[::1]/events");
/// assert_eq!(redact_url("http://sink/events"), "http://sink/events");
/// ```
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        // Without a host it has no userinfo: `user:token@host` parses as a
        // URL of scheme `user`, with a path holding the token.
        Ok(parsed) if parsed.has_host() => {
            redact_parsed(parsed).unwrap_or_else(|| redact_text(url))
        }
        _ => redact_text(url),
    }
}

/// A parsed URL redacted through the URL's setters; `None` if one refuses
/// (no such URL has userinfo, but the text fallback is safe either way).
fn redact_parsed(mut url: url::Url) -> Option<String> {
    if !url.username().is_empty() || url.password().is_some() {
        url.set_password(None).ok()?;
        url.set_username(HIDDEN).ok()?;
    }
    if let Some(query) = url.query() {
        let query = redact_query(query);
        url.set_query(Some(&query));
    }
    if url.fragment().is_some_and(|f| !f.is_empty()) {
        url.set_fragment(Some(HIDDEN));
    }
    Some(url.into())
}

/// Text that is no URL, redacted more coarsely, since where its userinfo
/// ends is a guess (a password may hold an unencoded `/`, `?` or `#`):
/// everything after the scheme up to the last `@` is hidden, all of it when
/// a `?` or `#` comes before that `@`; after it, query values and the
/// fragment are hidden as in a URL.
fn redact_text(text: &str) -> String {
    // a `://` ends the scheme only after a valid scheme: a text missing its
    // scheme may still hold one further on (`host/x?back=https://...`)
    let (scheme, body) = match text.find("://") {
        Some(i) if is_scheme(&text[..i]) => text.split_at(i + 3),
        _ => ("", text),
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(scheme);
    let rest = match body.rfind('@') {
        Some(at) if body[..at].contains(['?', '#']) => {
            out.push_str(HIDDEN);
            out.push('@');
            out.push_str(HIDDEN);
            return out;
        }
        Some(at) => {
            out.push_str(HIDDEN);
            &body[at..]
        }
        None => body,
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    match rest.split_once('?') {
        Some((rest, query)) => {
            out.push_str(rest);
            out.push('?');
            out.push_str(&redact_query(query));
        }
        None => out.push_str(rest),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        if !fragment.is_empty() {
            out.push_str(HIDDEN);
        }
    }
    out
}

/// Whether `text` is a URL scheme: a letter, then letters, digits, `+`,
/// `-` and `.` (RFC 3986, section 3.1).
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `name=***` for every `&`-separated parameter (`***` for one without `=`).
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) => format!("{name}={HIDDEN}"),
            None if param.is_empty() => String::new(),
            None => HIDDEN.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_userinfo_is_hidden() {
        for (url, shown) in [
            ("https://ghp_TOKEN@host/hook", "https://***@host/hook"),
            ("https://user:pass@host/hook", "https://***@host/hook"),
            ("https://:pass@host/hook", "https://***@host/hook"),
            ("https://user:@host/hook", "https://***@host/hook"),
            (
                "https://us%40er:p%3Ass@host:8443/",
                "https://***@host:8443/",
            ),
            // the userinfo ends at the last `@` of the authority
            ("http://a@b@host/x", "http://***@host/x"),
            ("http://host/x", "http://host/x"),
            // a `@` in the path is no userinfo
            ("http://host/a@b", "http://host/a@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn every_query_value_is_hidden_and_names_kept() {
        for (url, shown) in [
            (
                "https://host/hook?access_token=abc&v=2",
                "https://host/hook?access_token=***&v=***",
            ),
            (
                "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=AbC%2Bd%3D&se=2030",
                "https://acct.blob.core.windows.net/c/b?sv=***&sig=***&se=***",
            ),
            ("https://host/?code=", "https://host/?code=***"),
            ("https://host/?token=a=b", "https://host/?token=***"),
            // a parameter without `=` may be a bare token
            ("https://host/hook?s3cr3t", "https://host/hook?***"),
            ("https://host/?a=1&&b=2", "https://host/?a=***&&b=***"),
            ("https://host/?", "https://host/?"),
            ("https://host/x", "https://host/x"),
            // `;` separates nothing: the value hides all after `=`
            ("https://host/?a=1;key=k", "https://host/?a=***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn fragments_are_hidden() {
        for (url, shown) in [
            ("https://host/cb#access_token=abc", "https://host/cb#***"),
            (
                "https://t@host/cb?x=1#frag",
                "https://***@host/cb?x=***#***",
            ),
            ("https://host/cb#", "https://host/cb#"),
            // a `?` in the fragment starts no query
            ("https://host/cb#a?token=t", "https://host/cb#***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn scheme_host_port_and_path_are_kept() {
        for (url, shown) in [
            ("http://[::1]:8080/events", "http://[::1]:8080/events"),
            (
                "http://tok@[2001:db8::1]:9/e?k=v",
                "http://***@[2001:db8::1]:9/e?k=***",
            ),
            ("http://10.0.0.7:8080/a/b/", "http://10.0.0.7:8080/a/b/"),
            ("HTTPS://Host.Example", "https://host.example/"),
            ("http://host:80/x", "http://host/x"),
            // `\` is `/` in an http URL: a path, and no userinfo
            ("http://host\\a@b?k=v", "http://host/a@b?k=***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn no_combination_shows_a_secret() {
        for scheme in ["https://", "http://", "ws://", ""] {
            for userinfo in ["", "SECRET@", "u:SECRET@", ":SECRET@", "SE%40CRET:x@"] {
                for host in ["host", "host:8080", "[::1]", "[2001:db8::1]:9", "ex ample"] {
                    for query in [
                        "",
                        "?a=SECRET",
                        "?SECRET",
                        "?a=1&b=SECRET",
                        "?b=x%26SECRET",
                        "?back=https://x.example/SECRET",
                        "?a=SECRET&back=https://u@x.example/",
                    ] {
                        for fragment in ["", "#SECRET", "#a=SECRET"] {
                            let url = format!("{scheme}{userinfo}{host}/p{query}{fragment}");
                            let shown = redact_url(&url);
                            assert!(!shown.contains("SECRET"), "{url} -> {shown}");
                            // text that does not parse, with a `@` after a
                            // `?`, is hidden whole (see `redact_text`)
                            let parses = !scheme.is_empty() && !host.contains(' ');
                            if !query.contains('@') || parses {
                                assert!(shown.contains("/p"), "{url} -> {shown}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn text_that_does_not_parse_is_redacted_as_text() {
        for (url, shown) in [
            (
                "http://tok@exa mple/x?access_token=a&v=1#f",
                "http://***@exa mple/x?access_token=***&v=***#***",
            ),
            ("http://u:p@host:99999/x", "http://***@host:99999/x"),
            ("tok@host/x?k=v", "***@host/x?k=***"),
            // a URL of scheme `user`, without a host
            ("user:tok@host/x?k=v", "***@host/x?k=***"),
            ("mailto:a@b?subject=s", "***@b?subject=***"),
            ("file:///x?k=v", "file:///x?k=***"),
            ("http://[::1/x?sig=s", "http://[::1/x?sig=***"),
            ("http://t@[::1/x?sig=s", "http://***@[::1/x?sig=***"),
            // a password with an unencoded `/`, `?` or `#`: hidden whole
            ("http://u:pa/ss@ho st/x", "http://***@ho st/x"),
            ("http://u:pa?ss@ho st/x?k=v", "http://***@***"),
            ("http://u:pa#ss@ho st/x", "http://***@***"),
            // so is a path or query holding a `@`, which costs detail only
            ("http://ho st/a@b?k=v", "http://***@b?k=***"),
            ("http://ho st/x?mail=a@b&k=v", "http://***@***"),
            // no scheme, and a URL in the query: the first `://` is not
            // the end of a scheme
            (
                "hooks.example.com/hook?access_token=SECRET&back=https://app.example/done",
                "hooks.example.com/hook?access_token=***&back=***",
            ),
            (
                "TOKEN@hooks.example.com/hook?next=https://x.example/",
                "***@hooks.example.com/hook?next=***",
            ),
            ("not a url", "not a url"),
            ("", ""),
            ("?", "?"),
            ("#", "#"),
            ("@", "***@"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
