"""End-to-end tests: real DHCP clients, a relay and perfdhcp in network namespaces."""
