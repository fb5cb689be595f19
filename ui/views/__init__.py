"""The pages behind ``st.navigation``: each file is run as a script by Streamlit."""
