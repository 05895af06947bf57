#!/usr/bin/env python3
"""Protocol fakes of Google Drive (API v3 + OAuth) and OneDrive (Microsoft Graph + OAuth).

OpenDAL hard-codes the providers' host names, so lomob under test runs in a private mount
namespace whose /etc/hosts sends www.googleapis.com, oauth2.googleapis.com,
graph.microsoft.com and login.microsoftonline.com to 127.0.0.1, trusting a test CA through
SSL_CERT_FILE. This server answers all four on 127.0.0.1:443 (TLS), choosing the API by
the Host header. It implements only the calls OpenDAL 0.59's gdrive and onedrive services
make (and the code grant `lomob site auth` makes), with the status codes and error bodies the
providers document.

Every OAuth client id is its own account (its own drive, faults and request log), so tests
running at once do not see each other. A plain-HTTP control port (loopback only) lets tests
inspect and alter an account:

  GET  /accounts/ID/requests         every API request seen: [{"method", "host", "path"}]
  GET  /accounts/ID/files            files: [{"path", "size", "trashed", hashes...}]
  POST /accounts/ID/fault            {"status": 429|503|..., "count": N, "retry_after": S,
                                      "match": "substring of METHOD HOST PATH"}; 401
                                      expires the account's access tokens there
  POST /accounts/ID/expire-tokens    access tokens issued so far answer 401 from now on
  POST /accounts/ID/revoke           the refresh token is revoked (invalid_grant)
  POST /accounts/ID/quota            {"bytes": N} (null: unlimited); trash counts, as on Drive
  POST /accounts/ID/empty-trash
  POST /accounts/ID/page-size        {"size": N}: the most entries per list page
  POST /accounts/ID/alter            {"path": P}: other bytes of the same size, stored in
                                      place (hashes follow the bytes; modified time and eTag
                                      do not change)
  POST /accounts/ID/corrupt-uploads  {"count": N, "match": "substring of the file's path"}:
                                      the next N matching uploads store other bytes of the
                                      same size than were sent (hashes follow what is stored)
  POST /accounts/ID/authcode         {"code", "challenge", "refresh_token"} for the code grant

Usage: cloud_fakes.py CERT KEY CONTROL_PORT [TLS_PORT (default 443)] [TLS_ADDRESS (default 127.0.0.1)]
"""

import base64
import hashlib
import json
import re
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.RLock()
ACCOUNTS = {}
TOKENS = {}  # access token -> (account id, generation)
FOLDER = "application/vnd.google-apps.folder"
MASK160 = (1 << 160) - 1


def quickxor(data):
    """Microsoft's QuickXorHash: each byte XORed into a 160-bit register at a shift of
    11 bits per position (wrapping round), then the length XORed into the last 8 bytes.
    Bytes 160 positions apart share a shift, so 160-byte blocks are XORed first."""
    acc = 0
    for j in range(0, len(data), 160):
        acc ^= int.from_bytes(data[j:j + 160], "little")
    h = 0
    for i in range(min(160, len(data))):
        b = (acc >> (8 * i)) & 0xFF
        if b:
            v = b << ((i * 11) % 160)
            h ^= (v & MASK160) | (v >> 160)
    out = bytearray(h.to_bytes(20, "little"))
    for i, lb in enumerate(len(data).to_bytes(8, "little")):
        out[12 + i] ^= lb
    return base64.b64encode(bytes(out)).decode()


def now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


class Item:
    def __init__(self, name, parent, folder, data=b""):
        self.id = uuid.uuid4().hex[:24]
        self.name = name
        self.parent = parent
        self.folder = folder
        self.trashed = False
        self.modified = now_rfc3339()
        self.version = 1
        self.set_data(data)

    def set_data(self, data):
        self.data = bytes(data)
        self.md5 = hashlib.md5(self.data).hexdigest()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.sha1 = hashlib.sha1(self.data).hexdigest().upper()
        self.qxh = quickxor(self.data)


class Account:
    def __init__(self, aid):
        self.id = aid
        self.root = Item("My Drive", None, True)
        self.root.id = "root-" + uuid.uuid4().hex[:8]
        self.items = {self.root.id: self.root}
        self.requests = []
        self.faults = []
        self.generation = 0
        self.revoked = False
        self.quota = None
        self.page_size = None
        self.codes = {}
        self.sessions = {}
        self.corrupt = []

    def stored(self, path, data):
        """The bytes kept for an upload of DATA to PATH (altered by corrupt-uploads)."""
        for c in self.corrupt:
            if c["count"] > 0 and c["match"] in path and data:
                c["count"] -= 1
                return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def used(self):
        # Trashed files count against the quota until the trash is emptied (both providers).
        return sum(len(i.data) for i in self.items.values() if not i.folder)

    def children(self, parent_id, include_trashed=False):
        return [i for i in self.items.values()
                if i.parent == parent_id and (include_trashed or not i.trashed)]

    def path_of(self, item):
        parts = []
        while item is not None and item.parent is not None:
            parts.append(item.name)
            item = self.items.get(item.parent)
        return "/" + "/".join(reversed(parts))

    def by_path(self, path, create_dirs=False):
        """The live item at PATH ('/a/b'), or None; with create_dirs, missing folders on
        the way are made (the last segment is not)."""
        cur = self.root
        segs = [s for s in path.split("/") if s]
        for n, seg in enumerate(segs):
            nxt = next((c for c in self.children(cur.id) if c.name == seg), None)
            if nxt is None:
                if create_dirs and n < len(segs) - 1:
                    nxt = Item(seg, cur.id, True)
                    self.items[nxt.id] = nxt
                else:
                    return None
            cur = nxt
        return cur

    def take_fault(self, line):
        for f in self.faults:
            if f["count"] > 0 and f.get("match", "") in line:
                f["count"] -= 1
                return f
        return None


def account(aid):
    with LOCK:
        if aid not in ACCOUNTS:
            ACCOUNTS[aid] = Account(aid)
        return ACCOUNTS[aid]


def issue_token(acc):
    tok = "ya29.fake-" + uuid.uuid4().hex
    TOKENS[tok] = (acc.id, acc.generation)
    return tok


# --- Drive's `fields` parameter ---------------------------------------------------------

def parse_fields(s):
    """'nextPageToken,files(id,name)' -> {'nextPageToken': None, 'files': {'id':..}}"""
    out, i, name = {}, 0, ""
    while i < len(s):
        c = s[i]
        if c == ",":
            if name:
                out[name.strip()] = None
            name = ""
        elif c == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(s[j], 0)
                j += 1
            out[name.strip()] = parse_fields(s[i + 1:j - 1])
            name, i = "", j
            continue
        else:
            name += c
        i += 1
    if name.strip():
        out[name.strip()] = None
    return out


def drive_file(acc, it, fields):
    full = {"kind": "drive#file", "id": it.id, "name": it.name,
            "mimeType": FOLDER if it.folder else "application/octet-stream",
            "parents": [it.parent] if it.parent else [], "trashed": it.trashed,
            "modifiedTime": it.modified, "createdTime": it.modified}
    if not it.folder:
        full.update(size=str(len(it.data)), md5Checksum=it.md5,
                    sha256Checksum=it.sha256, sha1Checksum=it.sha1.lower())
    if fields is None:
        keep = ("kind", "id", "name", "mimeType")
        return {k: full[k] for k in keep}
    if "*" in fields:
        return full
    return {k: full[k] for k in fields if k in full}


def drive_error(code, message, reason, domain="global", status=None):
    body = {"error": {"code": code, "message": message,
                      "errors": [{"message": message, "domain": domain, "reason": reason}]}}
    if status:
        body["error"]["status"] = status
    return code, body


UNAUTH_DRIVE = drive_error(
    401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential.", "authError",
    status="UNAUTHENTICATED")


def parse_q(q):
    names = re.findall(r"name\s*=\s*'((?:[^'\\]|\\.)*)'", q)
    name = re.sub(r"\\(.)", r"\1", names[0]) if names else None
    parents = re.findall(r"'([^']+)'\s+in\s+parents", q)
    folders_only = "mimeType = 'application/vnd.google-apps.folder'" in q
    trashed = None
    m = re.search(r"trashed\s*=\s*(true|false)", q)
    if m:
        trashed = m.group(1) == "true"
    return name, parents, folders_only, trashed


def parse_multipart(ctype, body):
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        return None
    boundary = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        parts.append((head.decode("latin-1"), data))
    return parts


def byte_range(header, size):
    """(start, end_exclusive) for a Range header, None for no/unsatisfiable range."""
    if not header:
        return None
    m = re.match(r"bytes=(\d*)-(\d*)$", header.strip())
    if not m:
        return None
    a, b = m.group(1), m.group(2)
    if a == "":
        n = int(b)
        return (max(0, size - n), size)
    start = int(a)
    end = min(int(b) + 1, size) if b else size
    return (start, end)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.headers.get("Host", "-"), fmt % args))

    # --- plumbing ---
    def body(self):
        if getattr(self, "_body", None) is not None:
            return self._body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                n = int(self.rfile.readline().strip().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(n)
                self.rfile.readline()
            self._body = data
        else:
            self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def send(self, status, body=b"", headers=None, ctype="application/json; charset=UTF-8"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if body or status not in (204, 304):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        self._body = None
        self.url = urllib.parse.urlsplit(self.path)
        self.query = dict(urllib.parse.parse_qsl(self.url.query, keep_blank_values=True))
        if self.server.control:
            return self.control()
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        self.body()  # always read the body: keep-alive needs it off the wire
        try:
            {"oauth2.googleapis.com": self.google_token,
             "www.googleapis.com": self.drive,
             "login.microsoftonline.com": self.ms_token,
             "graph.microsoft.com": self.graph}.get(host, self.unknown_host)(host)
        except BrokenPipeError:
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

    def unknown_host(self, host):
        self.send(421, {"error": "no fake for host %r" % host})

    def bearer(self):
        a = self.headers.get("Authorization", "")
        tok = a[7:] if a.startswith("Bearer ") else None
        with LOCK:
            hit = TOKENS.get(tok)
            if not hit:
                return None, False
            acc = ACCOUNTS[hit[0]]
            return acc, hit[1] == acc.generation

    def fault(self, acc, host, kind):
        """Applies an injected fault to this request; True when it was answered."""
        line = "%s %s %s" % (self.command, host, self.url.path)
        with LOCK:
            f = acc.take_fault(line)
        if not f:
            return False
        if f["status"] == 401:
            # The access token expires here: this and later requests with it get 401.
            with LOCK:
                acc.generation += 1
            if kind == "drive":
                code, body = UNAUTH_DRIVE
                return self.send(code, body) or True
            return self.graph_error(401, "InvalidAuthenticationToken",
                                    "Access token has expired or is not yet valid.") or True
        headers = {}
        if f.get("retry_after") is not None:
            headers["Retry-After"] = f["retry_after"]
        st = f["status"]
        if kind == "drive":
            reason = {429: ("rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
                      403: ("userRateLimitExceeded", "User rate limit exceeded.", "usageLimits"),
                      503: ("backendError", "Backend Error", "global")}.get(
                          st, ("backendError", "Backend Error", "global"))
            _, body = drive_error(st, reason[1], reason[0], reason[2])
        else:
            code = {429: "activityLimitReached", 503: "serviceNotAvailable"}.get(st, "generalException")
            body = {"error": {"code": code, "message": "The request has been throttled" if st == 429
                              else "Service unavailable"}}
        self.send(st, body, headers)
        return True

    def log_request_of(self, acc, host):
        with LOCK:
            acc.requests.append({"method": self.command, "host": host, "path": self.path})

    # --- OAuth ---
    def token_params(self):
        p = dict(self.query)
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            p.update(urllib.parse.parse_qsl(self.body().decode(), keep_blank_values=True))
        return p

    def token_common(self, host, ms):
        p = self.token_params()
        cid = p.get("client_id", "")
        if not cid:
            return self.send(400, {"error": "invalid_request",
                                   "error_description": "Missing required parameter: client_id"})
        acc = account(cid)
        self.log_request_of(acc, host)
        if self.fault(acc, host, "oauth"):
            return
        grant = p.get("grant_type")
        with LOCK:
            if grant == "refresh_token":
                if acc.revoked or not p.get("refresh_token"):
                    desc = ("AADSTS70000: The provided grant has expired due to it being revoked."
                            if ms else "Token has been expired or revoked.")
                    return self.send(400, {"error": "invalid_grant", "error_description": desc})
                rt = p["refresh_token"]
            elif grant == "authorization_code":
                want = acc.codes.pop(p.get("code", ""), None)
                verifier = p.get("code_verifier", "")
                got = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if not want or want["challenge"] != got:
                    return self.send(400, {"error": "invalid_grant",
                                           "error_description": "Bad code or code_verifier."})
                rt = want["refresh_token"]
                acc.revoked = False
            else:
                return self.send(400, {"error": "unsupported_grant_type"})
            tok = issue_token(acc)
        body = {"access_token": tok, "expires_in": 3599, "token_type": "Bearer",
                "scope": "Files.ReadWrite offline_access" if ms
                else "https://www.googleapis.com/auth/drive.file"}
        if ms or grant == "authorization_code":
            body["refresh_token"] = rt
        if ms:
            body["ext_expires_in"] = 3599
        self.send(200, body)

    def google_token(self, host):
        if self.command != "POST" or self.url.path != "/token":
            return self.send(404, {"error": "not_found"})
        self.token_common(host, ms=False)

    def ms_token(self, host):
        if self.command != "POST" or not self.url.path.endswith("/oauth2/v2.0/token"):
            return self.send(404, {"error": "not_found"})
        self.token_common(host, ms=True)

    # --- Drive ---
    def drive(self, host):
        acc, fresh = self.bearer()
        if acc is None or not fresh:
            code, body = UNAUTH_DRIVE
            return self.send(code, body, {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        self.log_request_of(acc, host)
        if self.fault(acc, host, "drive"):
            return
        path = self.url.path
        with LOCK:
            m = re.match(r"^/drive/v3/files/?$", path)
            if m and self.command == "GET":
                return self.drive_list(acc)
            if m and self.command == "POST":
                return self.drive_create_folder(acc)
            m = re.match(r"^/drive/v3/files/([^/]+)$", path)
            if m and self.command == "GET":
                return self.drive_get(acc, m.group(1))
            if m and self.command == "PATCH":
                return self.drive_patch(acc, m.group(1))
            if m and self.command == "DELETE":
                it = acc.items.get(m.group(1))
                if not it:
                    return self.drive_not_found(m.group(1))
                del acc.items[it.id]
                return self.send(204)
            if path == "/upload/drive/v3/files" and self.command == "POST":
                return self.drive_upload(acc)
            m = re.match(r"^/upload/drive/v3/files/([^/]+)$", path)
            if m and self.command == "PATCH":
                return self.drive_overwrite(acc, m.group(1))
        self.send(*drive_error(404, "Not Found", "notFound"))

    def drive_not_found(self, fid):
        self.send(*drive_error(404, "File not found: %s." % fid, "notFound", "global"))

    def fields(self):
        f = self.query.get("fields")
        return parse_fields(f) if f is not None else None

    def drive_list(self, acc):
        q = self.query.get("q", "")
        name, parents, folders_only, trashed = parse_q(q)
        parents = [acc.root.id if p == "root" else p for p in parents]
        out = []
        for it in acc.items.values():
            if it.parent is None:
                continue
            if parents and it.parent not in parents:
                continue
            if name is not None and it.name != name:
                continue
            if folders_only and not it.folder:
                continue
            if trashed is not None and it.trashed != trashed:
                continue
            out.append(it)
        if "modifiedTime desc" in self.query.get("orderBy", ""):
            out.sort(key=lambda i: i.modified, reverse=True)
        else:
            out.sort(key=lambda i: i.name)
        size = min(int(self.query.get("pageSize") or 100), 1000)
        if acc.page_size:
            size = min(size, acc.page_size)
        start = int(self.query.get("pageToken") or 0)
        page = out[start:start + size]
        fields = self.fields()
        ffields = None if fields is None else fields.get("files")
        body = {"files": [drive_file(acc, i, ffields) for i in page]}
        if start + size < len(out):
            body["nextPageToken"] = str(start + size)
        if fields is None:
            body = {"kind": "drive#fileList", "incompleteSearch": False, **body}
        else:
            body = {k: v for k, v in body.items() if k in fields}
        self.send(200, body)

    def drive_get(self, acc, fid):
        it = acc.items.get(acc.root.id if fid == "root" else fid)
        if not it:
            return self.drive_not_found(fid)
        if self.query.get("alt") == "media":
            if it.folder:
                return self.send(*drive_error(403, "Only files with binary content can be downloaded.",
                                              "fileNotDownloadable"))
            r = byte_range(self.headers.get("Range"), len(it.data))
            if r is None:
                return self.send(200, it.data, ctype="application/octet-stream")
            a, b = r
            if a >= len(it.data) and len(it.data) > 0:
                return self.send(416, b"", {"Content-Range": "bytes */%d" % len(it.data)})
            return self.send(206, it.data[a:b], {"Content-Range": "bytes %d-%d/%d" % (a, max(a, b - 1), len(it.data))},
                             ctype="application/octet-stream")
        self.send(200, drive_file(acc, it, self.fields()))

    def drive_patch(self, acc, fid):
        it = acc.items.get(fid)
        if not it:
            return self.drive_not_found(fid)
        meta = json.loads(self.body() or b"{}")
        if "trashed" in meta:
            it.trashed = bool(meta["trashed"])
        if "name" in meta:
            it.name = meta["name"]
        if meta.get("addParents"):
            it.parent = meta["addParents"][0]
        it.modified = now_rfc3339()
        self.send(200, drive_file(acc, it, self.fields()))

    def drive_create_folder(self, acc):
        meta = json.loads(self.body() or b"{}")
        parent = (meta.get("parents") or ["root"])[0]
        parent = acc.root.id if parent == "root" else parent
        if parent not in acc.items:
            return self.drive_not_found(parent)
        it = Item(meta.get("name", "Untitled"), parent, meta.get("mimeType") == FOLDER)
        acc.items[it.id] = it
        self.send(200, drive_file(acc, it, self.fields()))

    def quota_full(self, acc, extra):
        return acc.quota is not None and acc.used() + extra > acc.quota

    def drive_quota_error(self):
        self.send(*drive_error(403, "The user's Drive storage quota has been exceeded.",
                               "storageQuotaExceeded"))

    def drive_upload(self, acc):
        kind = self.query.get("uploadType")
        if kind != "multipart":
            return self.send(*drive_error(400, "Unsupported uploadType in this fake: %s" % kind, "badRequest"))
        parts = parse_multipart(self.headers.get("Content-Type", ""), self.body())
        if not parts or len(parts) != 2:
            return self.send(*drive_error(400, "Bad multipart request.", "badMultipart"))
        meta = json.loads(parts[0][1] or b"{}")
        data = parts[1][1]
        if self.quota_full(acc, len(data)):
            return self.drive_quota_error()
        parent = (meta.get("parents") or ["root"])[0]
        parent = acc.root.id if parent == "root" else parent
        if parent not in acc.items:
            return self.drive_not_found(parent)
        # Drive allows several files of one name in a folder: a create is always new.
        it = Item(meta.get("name", "Untitled"), parent, False, data)
        acc.items[it.id] = it
        it.set_data(acc.stored(acc.path_of(it), data))
        self.send(200, drive_file(acc, it, self.fields()))

    def drive_overwrite(self, acc, fid):
        it = acc.items.get(fid)
        if not it or it.folder:
            return self.drive_not_found(fid)
        data = self.body()
        if self.quota_full(acc, len(data) - len(it.data)):
            return self.drive_quota_error()
        it.set_data(acc.stored(acc.path_of(it), data))
        it.modified = now_rfc3339()
        self.send(200, drive_file(acc, it, self.fields()))

    # --- Graph (OneDrive) ---
    def graph_error(self, status, code, message, headers=None):
        self.send(status, {"error": {"code": code, "message": message,
                                     "innerError": {"date": now_rfc3339(),
                                                    "request-id": uuid.uuid4().hex}}}, headers)

    def graph_item(self, acc, it, select=None):
        parent = acc.items.get(it.parent) if it.parent else None
        ppath = "/drive/root:" + ("" if parent is None or parent.parent is None
                                  else urllib.parse.quote(acc.path_of(parent)))
        full = {"id": it.id, "name": it.name if it.parent else "root",
                "eTag": '"{%s},%d"' % (it.id.upper(), it.version),
                "cTag": '"c:{%s},%d"' % (it.id.upper(), it.version),
                "lastModifiedDateTime": it.modified[:19] + "Z",
                "createdDateTime": it.modified[:19] + "Z",
                "size": len(it.data) if not it.folder else sum(
                    len(c.data) for c in acc.children(it.id)),
                "parentReference": {"driveId": "fakedrive" + acc.id[:8], "driveType": "personal",
                                    "id": it.parent or "", "path": ppath}}
        if it.parent is None:
            full["parentReference"] = {"driveId": "fakedrive" + acc.id[:8], "driveType": "personal",
                                       "id": "", "path": ""}
            full["root"] = {}
        if it.folder:
            full["folder"] = {"childCount": len(acc.children(it.id))}
        else:
            full["file"] = {"mimeType": "application/octet-stream",
                            "hashes": {"quickXorHash": it.qxh}}
        if select:
            keep = set(select.split(","))
            full = {k: v for k, v in full.items() if k in keep}
        full["@odata.etag"] = '"{%s},%d"' % (it.id.upper(), it.version)
        return full

    def graph(self, host):
        path = self.url.path
        if path.startswith("/__upload/"):
            return self.graph_fragment(host, path[len("/__upload/"):])
        acc, fresh = self.bearer()
        if acc is None or not fresh:
            return self.graph_error(401, "InvalidAuthenticationToken",
                                    "Access token has expired or is not yet valid.",
                                    {"WWW-Authenticate": 'Bearer realm=""'})
        self.log_request_of(acc, host)
        if self.fault(acc, host, "graph"):
            return
        if path.startswith("/__download/"):
            with LOCK:
                it = acc.items.get(path[len("/__download/"):])
                if not it:
                    return self.graph_error(404, "itemNotFound", "Item not found")
                return self.graph_download(it)
        prefix = "/v1.0/me/drive/root"
        if not path.startswith(prefix):
            return self.graph_error(400, "invalidRequest", "Unsupported by the fake: %s" % path)
        rest = path[len(prefix):]
        if rest.startswith(":"):
            # root:/a/b (the item), root:/a/b: (the same), root:/a/b:/children (an action)
            body = rest[1:]
            end = body.rfind(":")
            if end >= 0 and body[end + 1:].lstrip("/") in ("", "children", "content",
                                                              "createUploadSession", "versions"):
                ipath, action = body[:end], body[end + 1:]
            else:
                ipath, action = body, ""
            ipath = urllib.parse.unquote(ipath)
        else:
            ipath, action = "/", rest
        action = action.lstrip("/")
        select = self.query.get("$select")
        with LOCK:
            if self.command == "GET" and action == "":
                it = acc.by_path(ipath)
                if not it:
                    return self.graph_error(404, "itemNotFound", "The resource could not be found.")
                return self.send(200, self.graph_item(acc, it, select))
            if self.command == "GET" and action == "children":
                return self.graph_children(acc, ipath, select)
            if self.command == "GET" and action == "content":
                it = acc.by_path(ipath)
                if not it or it.folder:
                    return self.graph_error(404, "itemNotFound", "The resource could not be found.")
                # As Graph does: a redirect to a pre-authenticated download address.
                return self.send(302, b"", {"Location": "https://graph.microsoft.com/__download/%s" % it.id})
            if self.command == "PUT" and action == "content":
                return self.graph_put(acc, ipath, select)
            if self.command == "POST" and action == "createUploadSession":
                return self.graph_session(acc, ipath)
            if self.command == "POST" and action == "children":
                return self.graph_mkdir(acc, ipath, select)
            if self.command == "PATCH" and action == "":
                return self.graph_move(acc, ipath, select)
            if self.command == "DELETE" and action == "":
                it = acc.by_path(ipath)
                if not it:
                    return self.graph_error(404, "itemNotFound", "The resource could not be found.")
                self.trash_tree(acc, it)
                return self.send(204)
        self.graph_error(400, "invalidRequest", "Unsupported by the fake: %s %s" % (self.command, path))

    def graph_move(self, acc, ipath, select):
        """Update an item: a new name and/or parent (parentReference.id). With
        conflictBehavior=replace an item already holding the name goes to the recycle bin,
        as Graph does."""
        it = acc.by_path(ipath)
        if not it:
            return self.graph_error(404, "itemNotFound", "The resource could not be found.")
        meta = json.loads(self.body() or b"{}")
        parent = (meta.get("parentReference") or {}).get("id") or it.parent
        if parent not in acc.items or not acc.items[parent].folder:
            return self.graph_error(400, "invalidRequest", "Invalid parent reference")
        name = meta.get("name") or it.name
        clash = next((c for c in acc.children(parent) if c.name == name and c is not it), None)
        if clash is not None:
            if self.query.get("@microsoft.graph.conflictBehavior") != "replace":
                return self.graph_error(409, "nameAlreadyExists", "The specified item name already exists.")
            self.trash_tree(acc, clash)
        it.parent, it.name = parent, name
        it.modified = now_rfc3339()
        return self.send(200, self.graph_item(acc, it, select))

    def trash_tree(self, acc, it):
        # To the recycle bin: still billed against the quota until it is emptied.
        it.trashed = True

    def graph_download(self, it):
        r = byte_range(self.headers.get("Range"), len(it.data))
        if r is None:
            return self.send(200, it.data, ctype="application/octet-stream")
        a, b = r
        if a >= len(it.data) and len(it.data) > 0:
            return self.send(416, b"", {"Content-Range": "bytes */%d" % len(it.data)})
        self.send(206, it.data[a:b], {"Content-Range": "bytes %d-%d/%d" % (a, max(a, b - 1), len(it.data))},
                  ctype="application/octet-stream")

    def graph_children(self, acc, ipath, select):
        it = acc.by_path(ipath)
        if not it or not it.folder:
            return self.graph_error(404, "itemNotFound", "The resource could not be found.")
        kids = sorted(acc.children(it.id), key=lambda i: i.name)
        size = int(self.query.get("$top") or 200)
        if acc.page_size:
            size = min(size, acc.page_size)
        start = int(self.query.get("$skiptoken") or 0)
        body = {"value": [self.graph_item(acc, k, select) for k in kids[start:start + size]]}
        if start + size < len(kids):
            q = dict(self.query)
            q["$skiptoken"] = str(start + size)
            body["@odata.nextLink"] = "https://graph.microsoft.com%s?%s" % (
                self.url.path, urllib.parse.urlencode(q, safe="$,"))
        self.send(200, body)

    def graph_store(self, acc, ipath, data):
        """Creates or replaces the file at IPATH; (status, item) or an error sent."""
        data = acc.stored(ipath, data)
        old = acc.by_path(ipath)
        if old is not None and old.folder:
            return None
        if acc.quota is not None and acc.used() + len(data) - (len(old.data) if old else 0) > acc.quota:
            self.graph_error(507, "quotaLimitReached", "Insufficient Space Available")
            return None
        if old is not None:
            old.set_data(data)
            old.version += 1
            old.modified = now_rfc3339()
            return 200, old
        acc.by_path(ipath, create_dirs=True)  # Graph makes missing parent folders
        parent = acc.by_path(ipath.rsplit("/", 1)[0] or "/")
        it = Item(ipath.rsplit("/", 1)[1], parent.id, False, data)
        acc.items[it.id] = it
        return 201, it

    def graph_put(self, acc, ipath, select):
        data = self.body()
        if len(data) > 250 * 1024 * 1024:
            return self.graph_error(413, "requestTooLarge", "Simple upload is limited to 250 MB")
        res = self.graph_store(acc, ipath, data)
        if res is None:
            return
        status, it = res
        self.send(status, self.graph_item(acc, it, select))

    def graph_session(self, acc, ipath):
        sid = uuid.uuid4().hex
        acc.sessions[sid] = {"path": ipath, "data": bytearray(), "account": acc.id}
        self.send(200, {"uploadUrl": "https://graph.microsoft.com/__upload/%s" % sid,
                        "expirationDateTime": "2099-01-01T00:00:00Z",
                        "nextExpectedRanges": ["0-"]})

    def graph_fragment(self, host, sid):
        # Fragments carry no Authorization header (the address itself is the credential).
        with LOCK:
            sess = next((a.sessions.get(sid) for a in ACCOUNTS.values() if sid in a.sessions), None)
            if sess is None:
                return self.graph_error(404, "itemNotFound", "The upload session was not found.")
            acc = ACCOUNTS[sess["account"]]
        self.log_request_of(acc, host)
        if self.fault(acc, host, "graph"):
            return
        m = re.match(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
        if not m:
            return self.graph_error(400, "invalidRange", "Content-Range is required")
        a, b, total = (int(x) for x in m.groups())
        data = self.body()
        with LOCK:
            if a != len(sess["data"]) or b - a + 1 != len(data):
                return self.graph_error(416, "invalidRange", "Fragment overlap or gap",
                                        )
            sess["data"] += data
            if len(sess["data"]) < total:
                return self.send(202, {"expirationDateTime": "2099-01-01T00:00:00Z",
                                       "nextExpectedRanges": ["%d-" % len(sess["data"])]})
            del acc.sessions[sid]
            res = self.graph_store(acc, sess["path"], bytes(sess["data"]))
            if res is None:
                return
            _, it = res
            self.send(201, self.graph_item(acc, it))

    def graph_mkdir(self, acc, ipath, select):
        parent = acc.by_path(ipath)
        if not parent or not parent.folder:
            return self.graph_error(404, "itemNotFound", "The resource could not be found.")
        meta = json.loads(self.body() or b"{}")
        name = meta.get("name", "")
        old = next((c for c in acc.children(parent.id) if c.name == name), None)
        if old is not None:
            if old.folder and meta.get("@microsoft.graph.conflictBehavior") == "replace":
                return self.send(200, self.graph_item(acc, old, select))
            return self.graph_error(409, "nameAlreadyExists", "An item with the same name already exists.")
        it = Item(name, parent.id, True)
        acc.items[it.id] = it
        self.send(201, self.graph_item(acc, it, select))

    # --- control port ---
    def control(self):
        m = re.match(r"^/accounts/([^/]+)/([a-z-]+)$", self.url.path)
        if not m:
            return self.send(404, {"error": "no such control"})
        acc = account(urllib.parse.unquote(m.group(1)))
        what = m.group(2)
        arg = json.loads(self.body() or b"{}") if self.command == "POST" else {}
        with LOCK:
            if what == "requests":
                return self.send(200, acc.requests)
            if what == "files":
                return self.send(200, [
                    {"path": acc.path_of(i), "size": len(i.data), "trashed": i.trashed,
                     "md5": i.md5, "sha256": i.sha256, "quickXorHash": i.qxh}
                    for i in acc.items.values() if not i.folder])
            if what == "fault":
                acc.faults.append({"status": int(arg["status"]), "count": int(arg.get("count", 1)),
                                   "retry_after": arg.get("retry_after"), "match": arg.get("match", "")})
            elif what == "expire-tokens":
                acc.generation += 1
            elif what == "revoke":
                acc.revoked = True
            elif what == "quota":
                acc.quota = arg.get("bytes")
            elif what == "empty-trash":
                for i in [i for i in acc.items.values() if i.trashed]:
                    del acc.items[i.id]
            elif what == "page-size":
                acc.page_size = arg.get("size")
            elif what == "alter":
                it = acc.by_path(arg["path"])
                if not it or it.folder:
                    return self.send(404, {"error": "no file %s" % arg["path"]})
                it.set_data(bytes(b ^ 0x5A for b in it.data))
            elif what == "corrupt-uploads":
                acc.corrupt.append({"count": int(arg.get("count", 1)), "match": arg.get("match", "")})
            elif what == "authcode":
                acc.codes[arg["code"]] = {"challenge": arg["challenge"],
                                          "refresh_token": arg["refresh_token"]}
            else:
                return self.send(404, {"error": "no such control"})
        self.send(200, {"ok": True})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, control):
        self.control = control
        super().__init__(addr, Handler)


def main():
    cert, key, control_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tls_port = int(sys.argv[4]) if len(sys.argv) > 4 else 443
    # A loopback address of its own (127.x.y.z), so two copies of the test servers (two
    # checkouts, or CI beside a developer's run) can both listen on port 443.
    tls_addr = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    tls = Server((tls_addr, tls_port), control=False)
    # The handshake happens in the handler thread (on first read), not in the accept loop.
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
    ctl = Server(("127.0.0.1", control_port), control=True)
    threading.Thread(target=tls.serve_forever, daemon=True).start()
    sys.stderr.write("cloud fakes on %s:%d (TLS), control on 127.0.0.1:%d\n" % (tls_addr, tls_port, control_port))
    ctl.serve_forever()


if __name__ == "__main__":
    main()
