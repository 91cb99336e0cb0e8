"""BookAppointment + PayOrder through the order coordinator vs the same hospital calls direct."""
