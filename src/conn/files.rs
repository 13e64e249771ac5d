//! The file leg of a connection: `--static-map` files and X-Sendfile responses, written from
//! memory when the file is kept there, else read in pieces on the blocking pool.

use std::rc::Rc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use super::{COPY_BELOW, Conn, Outcome, WRITE_TIMEOUT};
use crate::http::RequestHead;
use crate::http::body::BodyState;
use crate::http::date::now_secs;
use crate::http::response::{Framing, ResponseHead, encode_head, encode_simple};
use crate::static_files::StaticFile;
use crate::static_files::files::{READ_CHUNK, open_path, read_chunk};
use crate::static_files::mime::content_type;
use crate::static_files::negotiate::accepts_gzip;
use crate::static_files::reply::{Ask, Chosen, Plan, plan};
use crate::static_files::resolve::{has_encoded_separator, relative};

impl Conn {
    /// Serves a GET or HEAD from a mapped folder when a file is there; `None`: go on to the cache
    /// and the app.
    pub(super) async fn try_static(&mut self, head: &RequestHead) -> Option<Outcome> {
        let core = self.core.clone();
        let files = core.files.as_ref()?;
        if !matches!(head.method(), b"GET" | b"HEAD") {
            return None;
        }
        let path = head.path()?;
        // The path, not the query: `/static/a.js?v=a%2Fb` is a file.
        if has_encoded_separator(head.raw_path()) {
            return None;
        }
        for (index, root) in files.roots().0.iter().enumerate() {
            let Some(rel) = relative(&root.prefix, path) else { continue };
            let Some(found) = files.lookup(index, rel).await else { continue };
            let vary = found.gz.is_some();
            let gzip = vary && accepts_gzip(head.field(b"accept-encoding"));
            let chosen = match (gzip, found.gz) {
                (true, Some(gz)) => gz,
                _ => found.file,
            };
            crate::stats::bump(&crate::stats::STATS.static_files);
            let mut body = BodyState::new(head.body);
            let ctype = content_type(rel);
            return Some(self.send_file(head, &mut body, &chosen, ctype, gzip, vary, None).await);
        }
        None
    }

    /// Sends `file` as the response to `head`. `app_head`: an X-Sendfile response's status and
    /// headers; its fields are kept, a Content-Type among them replaces the guessed one.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_file(
        &mut self,
        head: &RequestHead,
        body: &mut BodyState,
        file: &Rc<StaticFile>,
        ctype: &str,
        gzip: bool,
        vary: bool,
        app_head: Option<&ResponseHead>,
    ) -> Outcome {
        let ask = Ask {
            if_none_match: head.field(b"if-none-match"),
            if_modified_since: head.field(b"if-modified-since"),
            range: head.field(b"range"),
            if_range: head.field(b"if-range"),
        };
        let chosen = Chosen {
            size: file.size,
            mtime: file.mtime,
            etag: &file.etag,
            last_modified: &file.last_modified,
            content_type: ctype,
            gzip,
            vary,
        };
        let max_age = app_head.is_none().then_some(self.core.shared.config.static_max_age);
        let mut p = plan(&ask, &chosen, max_age, now_secs());
        let mut app_close = false;
        if let Some(app) = app_head {
            merge_app_fields(&mut p, &app.lines);
            app_close = app.close;
        }
        self.write_plan(head, body, p, file, app_close).await
    }

    /// Answers an X-Sendfile response: the named file with the app's other headers, or a 404
    /// when there is no regular file there.
    pub(super) async fn send_app_file(
        &mut self,
        head: &RequestHead,
        body: &mut BodyState,
        rh: &ResponseHead,
    ) -> Outcome {
        let path = rh.sendfile.clone().unwrap_or_default();
        match open_path(path.clone()).await {
            Some(file) => {
                let ctype = content_type(&path);
                self.send_file(head, body, &file, ctype, false, false, Some(rh)).await
            }
            None => {
                let keep = head.keep_alive
                    && !rh.close
                    && body.discard_buffered(&mut self.buf)
                    && !self.core.shared.draining.load(SeqCst);
                let msg = b"404 page not found\n";
                encode_simple(
                    &mut self.out,
                    404,
                    b"X-Content-Type-Options: nosniff\r\n",
                    msg,
                    head.is_head(),
                    keep,
                    head.minor,
                );
                let sent = if head.is_head() { 0 } else { msg.len() as u64 };
                match self.flush_out(Instant::now() + WRITE_TIMEOUT).await {
                    Ok(()) => Outcome { status: 404, bytes: sent, keep_alive: keep },
                    Err(_) => Outcome::close(404, 0),
                }
            }
        }
    }

    async fn write_plan(
        &mut self,
        head: &RequestHead,
        state: &mut BodyState,
        p: Plan,
        file: &Rc<StaticFile>,
        app_close: bool,
    ) -> Outcome {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let keep = head.keep_alive
            && !app_close
            && state.discard_buffered(&mut self.buf)
            && !self.core.shared.draining.load(SeqCst);
        let len = match p.part {
            Some((_, len)) => len,
            None => p.note.len() as u64,
        };
        let rh = ResponseHead { status: p.status, lines: p.lines, ..ResponseHead::default() };
        let framing = Framing::choose(p.status, head.is_head(), head.minor, Some(len));
        encode_head(&mut self.out, &rh, framing, keep, head.minor);
        let sent = if framing.has_body() { len } else { 0 };
        let fail = |status| Outcome::close(status, 0);
        match (framing.has_body(), p.part) {
            (false, _) => {}
            (true, None) => self.out.extend_from_slice(p.note),
            (true, Some((start, len))) => match &file.body {
                Some(body) if len < COPY_BELOW as u64 => {
                    self.out.extend_from_slice(&body[start as usize..(start + len) as usize]);
                }
                Some(body) => {
                    let part = body.slice(start as usize..(start + len) as usize);
                    if self.write_parts(part, b"", deadline).await.is_err() {
                        return fail(p.status);
                    }
                }
                None => {
                    // The head goes out with the first piece.
                    let mut offset = start;
                    let end = start + len;
                    while offset < end {
                        let n = (end - offset).min(READ_CHUNK as u64) as usize;
                        let read = match &file.file {
                            Some(f) => read_chunk(f.clone(), offset, n).await,
                            None => Err(std::io::Error::other("no open file")),
                        };
                        let Ok(data) = read else {
                            // The file changed under us: the response cannot be completed.
                            eprintln!("wsgo: a file being sent could not be read; closing the connection");
                            return Outcome::close(p.status, offset - start);
                        };
                        if self.write_parts(data, b"", deadline).await.is_err() {
                            return Outcome::close(p.status, offset - start);
                        }
                        offset += n as u64;
                    }
                }
            },
        }
        match self.flush_out(deadline).await {
            Ok(()) => Outcome { status: p.status, bytes: sent, keep_alive: keep },
            Err(_) => fail(p.status),
        }
    }
}

/// Adds the app's header lines to a file response: a field the file response also sets is
/// taken from the app (its Content-Type, Cache-Control, Content-Encoding: the app knows the
/// file is gzip), except the range and validator fields that describe the bytes actually sent.
fn merge_app_fields(p: &mut Plan, app_lines: &[u8]) {
    const OURS: &[&[u8]] = &[b"content-range", b"accept-ranges", b"etag", b"last-modified"];
    let name_of =
        |l: &[u8]| -> Vec<u8> { l.iter().take_while(|&&b| b != b':').map(u8::to_ascii_lowercase).collect() };
    let app: Vec<&[u8]> = app_lines.split_inclusive(|&b| b == b'\n').collect();
    let app_names: Vec<Vec<u8>> = app.iter().map(|l| name_of(l)).collect();
    let mut merged = Vec::with_capacity(p.lines.len() + app_lines.len());
    for l in p.lines.split_inclusive(|&b| b == b'\n') {
        let n = name_of(l);
        if OURS.contains(&n.as_slice()) || !app_names.contains(&n) {
            merged.extend_from_slice(l);
        }
    }
    for (l, n) in app.iter().zip(&app_names) {
        if !OURS.contains(&n.as_slice()) {
            merged.extend_from_slice(l);
        }
    }
    p.lines = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_fields_win_except_ours() {
        let mut p = Plan {
            status: 200,
            lines: b"ETag: \"a\"\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\n".to_vec(),
            part: Some((0, 1)),
            note: b"",
        };
        merge_app_fields(
            &mut p,
            b"content-type: application/pdf\r\nX-Extra: kept\r\nETag: \"app\"\r\nContent-Encoding: gzip\r\n",
        );
        assert_eq!(
            String::from_utf8(p.lines).unwrap(),
            "ETag: \"a\"\r\nCache-Control: no-cache\r\ncontent-type: application/pdf\r\nX-Extra: kept\r\nContent-Encoding: gzip\r\n"
        );
    }
}
