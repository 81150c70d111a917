"""Errors with Twilio's codes, shared by the server (REST and signaling) and the client SDK."""

from __future__ import annotations

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

#: Twilio's code -> (HTTP status, standard message). Messages follow Twilio's error dictionary.
TWILIO_ERRORS: dict[int, tuple[int, str]] = {
    20001: (400, "Invalid request"),
    20003: (401, "Authentication Error - invalid username"),
    20004: (405, "Method not allowed"),
    20404: (404, "The requested resource was not found"),
    20500: (500, "Internal Server Error"),
    20101: (401, "Invalid Access Token"),
    20102: (401, "Invalid Access Token header"),
    20103: (401, "Invalid Access Token issuer/subject"),
    20104: (401, "Access Token expired or expiration date invalid"),
    20105: (401, "Access Token not yet valid"),
    20106: (401, "Invalid Access Token grants"),
    20107: (401, "Invalid Access Token signature"),
    20157: (401, "Expiration Time in the Access Token Exceeds Maximum Time Allowed"),
    53000: (500, "Signaling connection error"),
    53001: (500, "Signaling connection disconnected"),
    53002: (408, "Signaling connection timed out"),
    53003: (400, "Client received an invalid signaling message"),
    53004: (400, "Client sent an invalid signaling message"),
    53100: (400, "Room name is invalid"),
    53101: (400, "Room name is too long"),
    53102: (400, "Room name contains invalid characters"),
    53103: (500, "Unable to create Room"),
    53104: (403, "Unable to connect to Room"),
    53105: (403, "Room contains too many Participants"),
    53106: (404, "Room not found"),
    53107: (400, "MaxParticipants is out of range"),
    53108: (400, "RoomType is not valid"),
    53109: (400, "Timeout is out of range"),
    53110: (400, "StatusCallbackMethod is invalid"),
    53111: (400, "StatusCallback is invalid"),
    53112: (400, "Status is invalid"),
    53113: (400, "Room exists"),
    53118: (400, "Room completed"),
    53125: (400, "Track kind not supported by the Room"),
    53114: (400, "Room creation parameter(s) incompatible with the Room type"),
    53200: (400, "Participant identity is invalid"),
    53201: (400, "Participant identity is too long"),
    53202: (400, "Participant identity contains invalid characters"),
    53204: (404, "Participant not found"),
    53205: (409, "Participant disconnected because of duplicate identity"),
    53215: (400, "Invalid Subscribe Rule(s)"),
    53216: (400, "Participant session length exceeded"),
    53300: (400, "Track is invalid"),
    53403: (400, "Server is unable to apply a remote media description"),
    53405: (500, "Media connection failed or Media activity ceased"),
    53301: (400, "Track name is invalid"),
    53302: (400, "Track name is too long"),
    53303: (400, "Track name contains invalid characters"),
    53304: (409, "Track name is duplicated"),
}


class RoomError(Exception):
    """A refusal with Twilio's error code, raised by the SDK and rendered by the REST API."""

    def __init__(self, code: int, message: str | None = None, status: int | None = None) -> None:
        default_status, default_message = TWILIO_ERRORS.get(code, (400, "Error"))
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        super().__init__(f"{self.code}: {self.message}")

    def to_json(self) -> dict[str, object]:
        """Twilio's error body: code, message, more_info, status."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        }
