-- Demo auto-routing for the compose PACS: every instance Orthanc stores is
-- forwarded to RadGround (modality "radground" in orthanc.json), except the
-- results RadGround itself stores here (SR, GSPS), which arrive over DICOM
-- from the calling AE title RADGROUND. RadGround would ignore its own objects
-- anyway (loop prevention); not sending them back saves the round trip.
-- A real PACS does the same with its routing rules (e.g. modality CR/DX, body
-- part CHEST, not from RADGROUND).

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin ~= nil and origin['RequestOrigin'] == 'DicomProtocol'
      and origin['RemoteAet'] == 'RADGROUND' then
    return
  end
  SendToModality(instanceId, 'radground')
end
