"""Webhook ingress: PrestaShop (Standard Webhooks, opt-in unsigned) and R2 notifications."""
