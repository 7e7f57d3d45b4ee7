# DLMS/COSEM server: A-XDR codec, IEC 62056-47 wrapper, ACSE, xDLMS services, COSEM objects.
