"""The fault zoo: known faulty and healthy training runs that score LossGuard's diagnoses."""
