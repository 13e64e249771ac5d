//! The file leg of a connection: `--static-map` files and X-Sendfile responses, written from
//! memory when the file is kept there, else read in pieces on the blocking pool.

use std::rc::Rc;

use super::send::Response;
use super::transport::Transport;
use super::{Conn, Outcome, Req};
use crate::http::RequestHead;
use crate::http::date::now_secs;
use crate::http::response::ResponseHead;
use crate::static_files::StaticFile;
use crate::static_files::files::open_path;
use crate::static_files::mime::content_type;
use crate::static_files::negotiate::accepts_gzip;
use crate::static_files::reply::{Ask, Chosen, Plan, plan};
use crate::static_files::resolve::{has_encoded_separator, relative};
use crate::stats::bump;

const NOT_FOUND: &[u8] = b"404 page not found\n";

impl<T: Transport> Conn<T> {
    /// Serves a GET or HEAD from a mapped folder when a file is there; `None`: go on to the cache
    /// and the app.
    pub(super) async fn try_static(&mut self, head: &RequestHead, req: &mut Req) -> Option<Outcome> {
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
            bump(&self.core.state.stats.static_files);
            let ctype = content_type(rel);
            let max_age = Some(self.core.state.config.static_max_age);
            let p = file_plan(head, &chosen, ctype, gzip, vary, max_age);
            return Some(self.send(req, Response::File { plan: p, file: &chosen, app_close: false }).await);
        }
        None
    }

    /// Answers an X-Sendfile response: the named file with the app's other headers, or a 404
    /// when there is no regular file there.
    pub(super) async fn send_app_file(
        &mut self,
        head: &RequestHead,
        req: &mut Req,
        rh: &ResponseHead,
    ) -> Outcome {
        let path = rh.sendfile.clone().unwrap_or_default();
        match open_path(path.clone()).await {
            Some(file) => {
                let ctype = content_type(&path);
                let mut p = file_plan(head, &file, ctype, false, false, None);
                // The app's fields are kept; a Content-Type among them replaces the guessed one.
                merge_app_fields(&mut p, &rh.lines);
                self.send(req, Response::File { plan: p, file: &file, app_close: rh.close }).await
            }
            None => {
                // The app asked to close: honoured by answering as if it had.
                req.keep_alive &= !rh.close;
                let lines = b"X-Content-Type-Options: nosniff\r\n";
                self.send(req, Response::Simple { status: 404, lines, body: NOT_FOUND }).await
            }
        }
    }
}

/// What to send for `file` given the request's conditional and range fields. `max_age`: the
/// `--static-max-age` of a static file; `None` for X-Sendfile (its caching is the app's to say).
fn file_plan(
    head: &RequestHead,
    file: &Rc<StaticFile>,
    ctype: &str,
    gzip: bool,
    vary: bool,
    max_age: Option<u64>,
) -> Plan {
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
    plan(&ask, &chosen, max_age, now_secs())
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
