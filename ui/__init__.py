"""The Streamlit pages people chat in; they talk to the API over HTTP only."""
