"""Operator interfaces to a running server: the control socket (:mod:`tandem.api.control`)."""
