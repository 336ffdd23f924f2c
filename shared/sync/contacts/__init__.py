"""The contacts sync: personal Outlook contacts become private ClearVox contacts."""
