"""A Streamlit app for authgate's browser tests (tests/apps/README.md).

Shows the user the gateway signed in (X-Auth-User, as Streamlit saw it on the WebSocket
handshake), a button that increments a counter, and a file uploader that reports the
uploaded file's size. Nothing here knows about the gateway beyond reading the header.
"""
import streamlit as st

st.title("authgate streamlit test")

user = st.context.headers.get("X-Auth-User")
roles = st.context.headers.get("X-Auth-Roles")
st.markdown(f"User: `{user or '(none)'}`")
st.markdown(f"Roles: `{roles or '(none)'}`")

if "count" not in st.session_state:
    st.session_state.count = 0
if st.button("Increment", key="increment"):
    st.session_state.count += 1
st.text(f"count={st.session_state.count}")

uploaded = st.file_uploader("Upload a file", key="upload")
if uploaded is not None:
    st.text(f"uploaded {uploaded.name}: {len(uploaded.getvalue())} bytes")
else:
    st.text("no file uploaded")
