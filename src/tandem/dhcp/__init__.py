"""The DHCP engine: pure logic, no sockets, no clock."""
