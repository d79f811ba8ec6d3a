"""The failover peer (draft-ietf-dhc-failover-12). Only :mod:`policy` exists so far."""
