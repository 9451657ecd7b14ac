"""The strom client SDK (Producer, Consumer, Admin). Imports only `strom.v1` and the storage codec."""
