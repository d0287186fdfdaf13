"""One module per command family: parse options, call the client, hand data to render."""
