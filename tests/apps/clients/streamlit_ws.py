#!/usr/bin/env python3
"""Drives tests/apps/streamlit_app.py the way its page does, without a browser (a smoke check
of the WebSocket, XSRF cookie and upload path, directly or through the gateway).

Usage: target/webapps-venv/bin/python tests/apps/clients/streamlit_ws.py BASE_URL [HEADER ...]
  BASE_URL  e.g. http://127.0.0.1:8501 or http://127.0.0.1:GATEWAY/st (the app's public root)
  HEADER    extra request headers, e.g. "Cookie: authgate_access=..." or "X-Auth-User: alice"
Prints one line per step and exits non-zero on the first failure.
"""
import sys
from urllib.parse import urlsplit

import requests
import websocket
from streamlit.proto import BackMsg_pb2, ClientState_pb2, Common_pb2, ForwardMsg_pb2, WidgetStates_pb2


def main():
    base = sys.argv[1].rstrip("/")
    extra = [h for h in sys.argv[2:]]
    hdrs = dict(h.split(": ", 1) for h in extra)
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    s = requests.Session()
    r = s.get(base + "/_stcore/health", headers=hdrs)
    print("health", r.status_code, r.text.strip())
    xsrf = s.cookies.get("_streamlit_xsrf")
    if r.status_code != 200 or not xsrf:
        sys.exit("no health or no _streamlit_xsrf cookie")
    cookie = "; ".join([f"_streamlit_xsrf={xsrf}"] + [v for k, v in hdrs.items() if k.lower() == "cookie"])
    ws_hdrs = [f"{k}: {v}" for k, v in hdrs.items() if k.lower() != "cookie"] + [f"Cookie: {cookie}"]
    ws_url = ("wss" if parts.scheme == "https" else "ws") + base[len(parts.scheme):] + "/_stcore/stream"
    ws = websocket.create_connection(ws_url, subprotocols=["streamlit", xsrf], origin=origin,
                                     header=ws_hdrs, timeout=30)

    def run(states=()):
        bm = BackMsg_pb2.BackMsg()
        bm.rerun_script.CopyFrom(ClientState_pb2.ClientState(query_string="", page_script_hash=""))
        bm.rerun_script.widget_states.widgets.extend(states)
        ws.send_binary(bm.SerializeToString())
        texts, ids, sid = [], {}, None
        while True:
            fm = ForwardMsg_pb2.ForwardMsg()
            fm.ParseFromString(ws.recv())
            kind = fm.WhichOneof("type")
            if kind == "new_session":
                sid = fm.new_session.initialize.session_id
            elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                el = fm.delta.new_element
                k = el.WhichOneof("type")
                if k == "text":
                    texts.append(el.text.body)
                elif k == "markdown":
                    texts.append(el.markdown.body)
                elif k in ("button", "file_uploader"):
                    ids[k] = getattr(el, k).id
            elif kind == "script_finished":
                return texts, ids, sid

    texts, ids, sid = run()
    print("page", texts)
    texts, _, _ = run([WidgetStates_pb2.WidgetState(id=ids["button"], trigger_value=True)])
    print("after click", [t for t in texts if t.startswith("count=")])
    if "count=1" not in texts:
        sys.exit("button click did not count")

    bm = BackMsg_pb2.BackMsg()
    bm.file_urls_request.CopyFrom(Common_pb2.FileURLsRequest(request_id="r1", file_names=["up.bin"], session_id=sid))
    ws.send_binary(bm.SerializeToString())
    while True:
        fm = ForwardMsg_pb2.ForwardMsg()
        fm.ParseFromString(ws.recv())
        if fm.WhichOneof("type") == "file_urls_response":
            urls = fm.file_urls_response.file_urls[0]
            break
    data = b"x" * 12345
    # The page resolves upload_url against its own base path.
    up = base + "/" + urls.upload_url.lstrip("/")
    r = s.put(up, files={"file": ("up.bin", data)}, headers={**hdrs, "X-Xsrftoken": xsrf, "Origin": origin})
    print("upload", r.status_code)
    if r.status_code != 204:
        sys.exit("upload refused: " + r.text[:200])
    st = WidgetStates_pb2.WidgetState(id=ids["file_uploader"])
    st.file_uploader_state_value.uploaded_file_info.append(
        Common_pb2.UploadedFileInfo(name="up.bin", size=len(data), file_id=urls.file_id, file_urls=urls))
    texts, _, _ = run([st])
    print("after upload", [t for t in texts if t.startswith("uploaded")])
    if f"uploaded up.bin: {len(data)} bytes" not in texts:
        sys.exit("upload not seen by the app")
    ws.close()
    print("ok")


if __name__ == "__main__":
    main()
