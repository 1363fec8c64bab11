"""`fasttrace view`: a web viewer of a trace (a timeline per thread, and profiles), served
by the standard library's http.server, or exported as one self-contained HTML file."""
