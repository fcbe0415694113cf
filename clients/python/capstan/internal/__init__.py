"""Capstan's own protocols; not for clients, may change in any release."""
