"""The users sync: Entra users become ClearVox users, linked by Object-ID."""
