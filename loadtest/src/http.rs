//! Just enough HTTP/1.1 for a load generator: keep-alive requests written as bytes, and an
//! incremental response parser (status, `Content-Length` or chunked body, `Location`,
//! `Connection: close`) that never allocates per response.

/// What the parser needs to know about a response it has fully read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of the whole response (head and body) in the buffer.
    pub len: usize,
    /// Byte ranges into the buffer.
    pub location: Option<(usize, usize)>,
    pub body: (usize, usize),
    pub close: bool,
}

/// Responses larger than this are an error (nothing we drive sends them).
pub const RESPONSE_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// Need more bytes.
    Partial,
    Done(Response),
    Bad(&'static str),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // Scan for the first byte, then compare: most bytes of a response are not '\r'.
    let (&first, rest) = needle.split_first()?;
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        let i = hay[at..hay.len() - rest.len()]
            .iter()
            .position(|&b| b == first)?;
        if &hay[at + i + 1..at + i + needle.len()] == rest {
            return Some(at + i);
        }
        at += i + 1;
    }
    None
}

fn parse_usize(s: &[u8]) -> Option<usize> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    s.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + (b - b'0') as usize)
    })
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    let s = s.split(|&b| b == b';').next()?.trim_ascii();
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    usize::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// Parses one response at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Parse::Bad("response head too large")
        } else {
            Parse::Partial
        };
    };
    let head = &buf[..head_end];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with(b"HTTP/1.") || status_line.len() < 12 {
        return Parse::Bad("not an HTTP/1.x status line");
    }
    let Some(status) = parse_usize(&status_line[9..12]).map(|s| s as u16) else {
        return Parse::Bad("bad status code");
    };
    let (mut length, mut chunked, mut close, mut location) = (None, false, false, None);
    let mut at = status_line.len() + 1;
    for line in lines {
        let start = at;
        at += line.len() + 1;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_usize(value) {
                Some(n) => length = Some(n),
                None => return Parse::Bad("bad content-length"),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case(b"location") {
            let off = start
                + colon
                + 1
                + (line[colon + 1..].len() - line[colon + 1..].trim_ascii_start().len());
            location = Some((off, off + value.len()));
        }
    }
    let body_start = head_end + 4;
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    if chunked && !no_body {
        // Walk the chunks; the body range covers the chunk framing (callers only search it).
        let mut pos = body_start;
        loop {
            let Some(eol) = find(&buf[pos..], b"\r\n") else {
                return Parse::Partial;
            };
            let Some(size) = parse_hex(&buf[pos..pos + eol]) else {
                return Parse::Bad("bad chunk size");
            };
            if size > RESPONSE_MAX {
                return Parse::Bad("response too large");
            }
            pos += eol + 2;
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                let Some(end) = find(&buf[pos..], b"\r\n") else {
                    return Parse::Partial;
                };
                let len = pos + end + 2;
                return Parse::Done(Response {
                    status,
                    len,
                    location,
                    body: (body_start, len),
                    close,
                });
            }
            if buf.len() < pos + size + 2 {
                return Parse::Partial;
            }
            pos += size + 2;
        }
    }
    let n = if no_body { 0 } else { length.unwrap_or(0) };
    if n > RESPONSE_MAX {
        return Parse::Bad("response too large");
    }
    if length.is_none() && !no_body && !close {
        // Without a length the body runs to the close; we never ask for such responses.
        return Parse::Bad("response without a length on a keep-alive connection");
    }
    if buf.len() < body_start + n {
        return Parse::Partial;
    }
    Parse::Done(Response {
        status,
        len: body_start + n,
        location,
        body: (body_start, body_start + n),
        close,
    })
}

/// The value of query parameter `name` in a URL (raw, not decoded).
pub fn query_param<'a>(url: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let q = &url[url.iter().position(|&b| b == b'?')? + 1..];
    let q = q.split(|&b| b == b'#').next()?;
    q.split(|&b| b == b'&').find_map(|kv| {
        let eq = kv.iter().position(|&b| b == b'=')?;
        (&kv[..eq] == name).then(|| &kv[eq + 1..])
    })
}

/// The string value of `"key":"value"` in a flat JSON body (ids only: no escapes).
pub fn json_str<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let at = find(body, pat.as_bytes())? + pat.len();
    let end = body[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[at..at + end]).ok()
}

/// Appends `s` percent-encoded for a query value.
pub fn push_query_value(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_with_location_and_no_body() {
        let r = b"HTTP/1.1 302 Found\r\ncontent-length: 0\r\nlocation: https://shop.example/l?a=1&click_id=AbC-9_x\r\ncache-control: no-store\r\n\r\nHTTP/1.1 200";
        let Parse::Done(resp) = parse(r) else {
            panic!()
        };
        assert_eq!(resp.status, 302);
        let (a, b) = resp.location.unwrap();
        assert_eq!(&r[a..b], b"https://shop.example/l?a=1&click_id=AbC-9_x");
        assert_eq!(query_param(&r[a..b], b"click_id"), Some(&b"AbC-9_x"[..]));
        assert_eq!(query_param(&r[a..b], b"a"), Some(&b"1"[..]));
        assert_eq!(&r[resp.len..], b"HTTP/1.1 200");
        assert!(!resp.close);
    }

    #[test]
    fn bodies_by_length_and_chunks_partial_until_complete() {
        let full =
            b"HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\n{\"conversion_id\":\"cv-1\",\"x\"}";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Parse::Partial, "{cut}");
        }
        let Parse::Done(r) = parse(full) else {
            panic!()
        };
        assert_eq!(
            json_str(&full[r.body.0..r.body.1], "conversion_id"),
            Some("cv-1")
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..chunked.len() {
            assert_eq!(parse(&chunked[..cut]), Parse::Partial, "{cut}");
        }
        let Parse::Done(r) = parse(chunked) else {
            panic!()
        };
        assert_eq!((r.status, r.len, r.close), (200, chunked.len(), true));
    }

    #[test]
    fn garbage_is_bad_not_a_panic() {
        assert!(matches!(parse(b"SSH-2.0-OpenSSH\r\n\r\n"), Parse::Bad(_)));
        assert!(matches!(parse(b"HTTP/1.1 2x0 OK\r\n\r\n"), Parse::Bad(_)));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Parse::Bad(_)
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Parse::Bad(_)
        ));
        assert!(matches!(parse(b"HTTP/1.1 200 OK\r\n\r\n"), Parse::Bad(_)));
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Parse::Done(Response {
                status: 204,
                len: 27,
                location: None,
                body: (27, 27),
                close: false
            })
        );
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let n = rng.usize(0..80);
            let junk: Vec<u8> = (0..n)
                .map(|_| *rng.choice(b"HTP/1. 0239\r\n:cLhunkedx-").unwrap())
                .collect();
            let _ = parse(&junk);
        }
    }

    #[test]
    fn find_matches_windows() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..5000 {
            let hay: Vec<u8> = (0..rng.usize(0..40))
                .map(|_| *rng.choice(b"\r\nab").unwrap())
                .collect();
            for needle in [&b"\r\n\r\n"[..], b"\r\n", b"a"] {
                assert_eq!(
                    find(&hay, needle),
                    hay.windows(needle.len()).position(|w| w == needle),
                    "{hay:?}"
                );
            }
        }
    }

    #[test]
    fn query_values_are_encoded() {
        let mut v = Vec::new();
        push_query_value(&mut v, "a b&c=d/é");
        assert_eq!(v, b"a%20b%26c%3Dd%2F%C3%A9");
    }
}
