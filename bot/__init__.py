"""whatsmate-bot: a Telegram chat-ops bot for the WhatsMate REST API."""
