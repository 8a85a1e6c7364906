"""Pure decisions about a request: where it runs (router), what may leave the device
(privacy), what it costs (cost). No I/O."""
