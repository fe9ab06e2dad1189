"""Telehealth: virtual visits kept in step with Appointment and Encounter state."""
