"""Launchers for lead_kt runs on Cloud TPU VMs and GPU machines (see launch/README.md)."""
