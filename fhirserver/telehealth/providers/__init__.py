"""Video providers behind one protocol: rooms, participant tokens, webhooks."""
